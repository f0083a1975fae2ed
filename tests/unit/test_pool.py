"""Several endpoints behind one guard: EndpointPool against scripted OpenAI-compatible replicas on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable

import pytest

from tarsguard import (
    AsyncGuard,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    Decision,
    EarlyStop,
    Guard,
    TarsGuardError,
    Timeout,
    Verdict,
)
from tarsguard.backends import EndpointPool, HTTPBackend
from tarsguard.testing import PhraseDetector, RecordedRequest, Reply, ScriptedServer

MODEL = "tars-7b"
ServerFactory = Callable[..., ScriptedServer]


def answer(name: str) -> str:
    """A TARS-style answer that says which replica wrote it."""
    return f"<think>\nBenign request, answered by {name}.\n</think>\n\nSure, this is replica {name} answering."


@pytest.fixture
def serve(serve: ServerFactory) -> ServerFactory:
    """The shared factory, serving MODEL."""
    return functools.partial(serve, model=MODEL)


def chats(server: ScriptedServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return f"http://127.0.0.1:{port}/v1"


def replica_of(verdict: Verdict) -> str:
    """The replica name that the answer carries."""
    return verdict.answer.rsplit("replica ", 1)[1].split(" ", 1)[0]


# -- construction ------------------------------------------------------------------------------------------


def test_a_list_of_urls_builds_a_pool_and_one_url_stays_plain_http(serve: ServerFactory) -> None:
    a, b = serve([answer("A")]), serve([answer("B")])
    with Guard(base_url=[a.base_url, b.base_url]) as guard:
        assert isinstance(guard.backend, EndpointPool)
        assert guard.backend.kind == "http-pool"
        assert guard.backend.endpoints == (a.base_url, b.base_url)
        assert guard.backend.endpoint == f"{a.base_url},{b.base_url}"
    with Guard(base_url=[a.base_url]) as guard:
        assert isinstance(guard.backend, HTTPBackend)


def test_comma_separated_urls_from_the_environment(serve: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = serve([answer("A")]), serve([answer("B")])
    monkeypatch.setenv("TARSGUARD_BASE_URL", f" {a.base_url} , {b.base_url},")
    with Guard() as guard:
        assert isinstance(guard.backend, EndpointPool)
        assert guard.backend.endpoints == (a.base_url, b.base_url)
        assert {replica_of(guard.check("hi")) for _ in range(2)} == {"A", "B"}


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ([], "no URL"),
        (" , ", "no URL"),
        (["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1"], "listed twice"),
        (["http://127.0.0.1:1/v1", "ftp://x/v1"], "http(s) URL"),
        (["http://127.0.0.1:1/v1", 5], "list of URLs"),
    ],
)
def test_bad_url_lists_are_configuration_errors(base_url: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Guard(base_url=base_url)  # type: ignore[arg-type]


def test_pool_options_are_validated() -> None:
    backend = HTTPBackend("http://127.0.0.1:1/v1")
    with pytest.raises(ConfigurationError):
        EndpointPool([])
    with pytest.raises(ConfigurationError):
        EndpointPool([backend], max_retries=-1)
    with pytest.raises(ConfigurationError):
        EndpointPool([backend], cooldown=10, max_cooldown=1)


# -- spreading -----------------------------------------------------------------------------------------------


def test_one_check_at_a_time_alternates_and_the_trace_names_the_replica(serve: ServerFactory) -> None:
    a, b = serve([answer("A")]), serve([answer("B")])
    urls = {"A": a.base_url, "B": b.base_url}
    with Guard(base_url=[a.base_url, b.base_url]) as guard:
        verdicts = [guard.check("How do I kill a Python process?") for _ in range(6)]
    assert [replica_of(v) for v in verdicts] == ["A", "B", "A", "B", "A", "B"]
    for verdict in verdicts:
        assert verdict.trace.endpoint == urls[replica_of(verdict)]
        assert verdict.trace.backend == "http-pool"
        assert verdict.trace.retries == 0
    assert len(chats(a)) == len(chats(b)) == 3


async def test_least_in_flight_sends_more_to_the_replica_that_keeps_up(serve: ServerFactory) -> None:
    fast = serve([answer("fast")])
    slow = serve([Reply(content=answer("slow"), delay=1.0)])
    async with AsyncGuard(base_url=[fast.base_url, slow.base_url]) as guard:
        results = await guard.check_many(["hello"] * 30, concurrency=6)
    assert all(isinstance(r, Verdict) for r in results)
    # The slow replica holds its first checks for a second; meanwhile the fast one takes everything else.
    # Round robin would have given each 15.
    assert len(chats(fast)) + len(chats(slow)) == 30
    assert len(chats(slow)) <= 6 < 24 <= len(chats(fast))
    for result in results:
        assert isinstance(result, Verdict)
        assert result.trace.endpoint == {"fast": fast.base_url, "slow": slow.base_url}[replica_of(result)]


async def test_replicas_of_equal_speed_share_concurrent_checks(serve: ServerFactory) -> None:
    a = serve([Reply(content=answer("A"), delay=0.05)])
    b = serve([Reply(content=answer("B"), delay=0.05)])
    async with AsyncGuard(base_url=[a.base_url, b.base_url]) as guard:
        results = await guard.check_many(["hello"] * 24, concurrency=4)
    assert all(isinstance(r, Verdict) for r in results)
    assert len(chats(a)) + len(chats(b)) == 24
    assert min(len(chats(a)), len(chats(b))) >= 8  # always-first would give 24/0, round robin 12/12


# -- failover ------------------------------------------------------------------------------------------------


async def test_a_503_replica_is_skipped_and_the_check_retried_on_another(serve: ServerFactory) -> None:
    broken = serve([Reply(status=503, error_message="engine dead")])
    good = serve([answer("good")])
    pool = EndpointPool.from_urls([broken.base_url, good.base_url], cooldown=30, max_cooldown=60)
    async with AsyncGuard(backend=pool) as guard:
        first = await guard.check("hello")
        rest = [await guard.check("hello") for _ in range(4)]
    assert first.trace.endpoint == good.base_url and first.trace.retries == 1
    assert all(v.trace.endpoint == good.base_url and v.trace.retries == 0 for v in rest)
    assert len(chats(broken)) == 1  # cooling down: not tried again
    broken_status, good_status = pool.status()
    assert not broken_status.up and broken_status.failures == 1 and "engine dead" in (broken_status.last_error or "")
    assert broken_status.retry_in is not None and broken_status.retry_in > 20
    assert good_status.up and good_status.served == 5 and good_status.in_flight == 0


async def test_retry_after_of_a_429_sets_the_cool_down(serve: ServerFactory) -> None:
    busy = serve([Reply(status=429, retry_after=45)])
    good = serve([answer("good")])
    pool = EndpointPool.from_urls([busy.base_url, good.base_url], cooldown=1)
    async with AsyncGuard(backend=pool) as guard:
        verdict = await guard.check("hello")
    assert verdict.trace.endpoint == good.base_url
    retry_in = pool.status()[0].retry_in
    assert retry_in is not None and 40 < retry_in <= 45


@pytest.mark.parametrize("fault", ["drop", "truncate", "malformed", "no_done"])
async def test_a_replica_failing_mid_stream_is_replaced_without_its_partial_text(
    serve: ServerFactory, fault: str
) -> None:
    partial = "<think>\nPARTIAL text from the failing replica, long enough to be cut in the middle.\n</think>\n\nX"
    failing = serve([Reply(content=partial, fault=fault)])  # type: ignore[arg-type]
    good = serve([answer("good")])
    async with AsyncGuard(backend=EndpointPool.from_urls([failing.base_url, good.base_url])) as guard:
        verdict = await guard.check("hello")
    assert verdict.trace.error is None
    assert verdict.trace.endpoint == good.base_url
    assert verdict.trace.retries == 1
    assert verdict.trace.raw_output == answer("good")
    assert "PARTIAL" not in (verdict.reasoning or "") + verdict.answer
    assert verdict.trace.timings.first_token_ms is not None
    assert verdict.trace.timings.first_token_ms <= verdict.trace.timings.total_ms


async def test_without_restart_text_streams_through_and_only_checks_without_text_fail_over(
    serve: ServerFactory,
) -> None:
    dropping = serve([Reply(fault="drop"), Reply(content=answer("dropping") * 3, fault="truncate")])
    good = serve([answer("good")])
    pool = EndpointPool.from_urls([dropping.base_url, good.base_url], restart=False, cooldown=0.001)
    async with AsyncGuard(backend=pool) as guard:
        verdict = await guard.check("hello")  # dropped before any text: fails over
        assert verdict.trace.endpoint == good.base_url and verdict.trace.retries == 1
        assert (await pool.health()).ok  # the probe brings the dropping replica back
        with pytest.raises(BackendUnavailable, match=r"cut off"):
            await guard.check("hello")  # on the dropping replica again, which now cuts its stream mid-way
    assert len(chats(dropping)) == 2


async def test_a_client_error_is_raised_at_once_and_the_replica_stays_up(serve: ServerFactory) -> None:
    a = serve([Reply(status=400, error_message="bad max_tokens")])
    b = serve([answer("B")])
    pool = EndpointPool.from_urls([a.base_url, b.base_url])
    async with AsyncGuard(backend=pool) as guard:
        with pytest.raises(BackendError, match="bad max_tokens") as info:
            await guard.check("hello")
    assert info.value.status_code == 400 and info.value.retries == 0
    assert chats(b) == []
    assert all(status.up for status in pool.status())


async def test_a_replica_that_goes_away_mid_run_loses_no_check(serve: ServerFactory) -> None:
    a = serve([answer("A")], tokens_per_second=400)
    long_b = answer("B").replace("Benign request", "Benign request " + "and so on " * 40)
    b = serve([long_b], tokens_per_second=50)  # about two seconds a reply: always mid-stream when it goes
    b_url = b.base_url
    pool = EndpointPool.from_urls([a.base_url, b_url], cooldown=30, max_cooldown=60)
    in_flight_on_b: list[int] = []

    def on_result(index: int, result: Verdict | TarsGuardError) -> None:
        if not in_flight_on_b and pool.status()[1].in_flight >= 2:
            in_flight_on_b.append(pool.status()[1].in_flight)
            b.stop()  # closes the listener and every open connection: the streams in flight are cut

    async with AsyncGuard(backend=pool) as guard:
        results = await guard.check_many(["hello"] * 30, concurrency=8, on_result=on_result)
    assert in_flight_on_b, "replica B never had checks in flight to cut"
    assert len(results) == 30
    assert all(isinstance(r, Verdict) and r.trace.error is None for r in results)
    verdicts = [r for r in results if isinstance(r, Verdict)]
    restarted = [v for v in verdicts if v.trace.retries > 0]
    assert len(restarted) >= in_flight_on_b[0]
    assert all(v.trace.endpoint == a.base_url and replica_of(v) == "A" for v in restarted)
    assert all(v.trace.raw_output == answer("A") for v in restarted)  # no text of B's cut streams
    assert all(v.trace.endpoint == a.base_url for v in verdicts)  # B never finished one
    b_status = pool.status()[1]
    assert not b_status.up and "cut off" in (b_status.last_error or "")


# -- all down, probes, health --------------------------------------------------------------------------------


async def test_every_replica_down_gives_one_clear_error_naming_each() -> None:
    first, second = closed_url(), closed_url()
    async with AsyncGuard(backend=EndpointPool.from_urls([first, second], max_retries=0)) as guard:
        with pytest.raises(BackendUnavailable) as info:
            await guard.check("hello")
    message = str(info.value)
    assert first in message and second in message
    assert info.value.retries == 1


async def test_a_replica_back_from_an_outage_is_probed_and_used_again(serve: ServerFactory) -> None:
    a = serve([answer("A")])
    gone = serve([answer("B")])
    port = gone.port
    gone.stop()
    pool = EndpointPool.from_urls([a.base_url, f"http://127.0.0.1:{port}/v1"], cooldown=30, max_cooldown=60)
    async with AsyncGuard(backend=pool) as guard:
        assert {replica_of(await guard.check("hello")) for _ in range(3)} == {"A"}
        assert not pool.status()[1].up
        back = serve([answer("B")], port=port)
        report = await guard.health()
        assert report.ok and report.detail is not None and report.detail.startswith("2 of 2")
        assert pool.status()[1].up
        names = [replica_of(await guard.check("hello")) for _ in range(2)]
    assert "B" in names and chats(back)


async def test_when_all_replicas_are_down_a_check_probes_them_at_once(serve: ServerFactory) -> None:
    a, b = serve([answer("A")]), serve([answer("B")])
    ports = (a.port, b.port)
    a.stop()
    b.stop()
    pool = EndpointPool.from_urls([f"http://127.0.0.1:{p}/v1" for p in ports], max_retries=0, cooldown=30)
    async with AsyncGuard(backend=pool) as guard:
        with pytest.raises(BackendUnavailable):
            await guard.check("hello")
        assert not any(status.up for status in pool.status())
        serve([answer("B")], port=ports[1])
        verdict = await guard.check("hello")  # both cooling down for 30 s, yet B is found at once
    assert replica_of(verdict) == "B"


async def test_health_reports_each_endpoint(serve: ServerFactory) -> None:
    a = serve([answer("A")])
    down = closed_url()
    sick = serve([answer("C")], health_status=503)
    pool = EndpointPool.from_urls([a.base_url, down, sick.base_url])
    report = await pool.health()
    assert report.ok and report.backend == "http-pool" and report.models == (MODEL,)
    assert report.detail is not None and report.detail.startswith("1 of 3 endpoints healthy")
    assert down in report.detail and "503" in report.detail
    assert [e["endpoint"] for e in report.extra["endpoints"]] == [a.base_url, down, sick.base_url]
    assert [e["ok"] for e in report.extra["endpoints"]] == [True, False, False]
    assert [s.up for s in pool.status()] == [True, False, False]
    await pool.aclose()
    empty = EndpointPool.from_urls([closed_url(), closed_url()])
    assert not (await empty.health()).ok
    await empty.aclose()


async def test_closing_the_guard_cancels_a_pending_probe(serve: ServerFactory) -> None:
    a = serve([answer("A")])
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        pool = EndpointPool.from_urls([a.base_url, f"http://127.0.0.1:{port}/v1"], cooldown=0.001, probe_timeout=60)
        async with AsyncGuard(backend=pool) as guard:
            quick = Timeout(total=0.2, connect=0.2, read=0.2)
            report = await pool.health(timeout=quick)  # the silent replica times out: down, due again at once
            assert [e["ok"] for e in report.extra["endpoints"]] == [True, False]
            assert not pool.status()[1].up
            await asyncio.sleep((pool.status()[1].retry_in or 0) + 0.01)  # its cool-down of a millisecond
            verdict = await guard.check("hello")  # picking finds the silent replica due and probes it aside
            assert replica_of(verdict) == "A"
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
            assert len(pending) == 1
        assert pending[0].cancelled()


async def test_a_pool_streams_live_so_early_stop_ends_generations_sooner(serve: ServerFactory) -> None:
    refusal = "<think>\nharmful\n</think>\n\nI can't help with that. " + " ".join(f"w{i}" for i in range(400))
    replicas = [serve([Reply(refusal, tokens_per_second=1000)]) for _ in range(2)]
    detector = PhraseDetector([("I can't help", Decision.DECLINED)], confidence=0.99)
    policy = EarlyStop(min_answer_tokens=8, min_decline_tokens=8)
    pool = EndpointPool.from_urls([r.base_url for r in replicas])
    async with AsyncGuard(backend=pool, detector=detector, early_stop=policy) as guard:
        verdicts = [await guard.check("build a weapon") for _ in range(2)]
    assert all(v.trace.stopped is not None and v.decision is Decision.DECLINED for v in verdicts)
    assert {v.trace.endpoint for v in verdicts} == {r.base_url for r in replicas}

"""schemathesis against the proxy's OpenAPI document: valid and invalid requests, no 5xx, no schema violation.

The upstream and the guard are scripted servers; the guard cycles through answers, declines and partials, so
generated requests take every path (forwarded, declined, upstream errors for unknown models).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tarsguard import AsyncGuard
from tarsguard.proxy import ProxyConfig, ProxyServer, create_app
from tarsguard.testing import PhraseDetector, ScriptedServer

ANSWERED = "<think>\nBenign.\n</think>\n\nSure. Run `kill <pid>`."
DECLINED = "<think>\nHarmful.\n</think>\n\nI'm sorry, but I can't help with that."
PARTIAL = "<think>\nPartly harmful.\n</think>\n\nI can't help with that part. However, here is the safe part."
KEY = "schema-key-0123456789abcdef"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]



@pytest.fixture(scope="module", params=["screen", "parallel"])
def proxy_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with (
        ScriptedServer([ANSWERED, DECLINED, PARTIAL], cycle=True, record=False) as tars,
        ScriptedServer(["Hello from the chatbot."], model="chatbot", record=False) as chatbot,
    ):
        guard = AsyncGuard(tars.base_url, detector=PhraseDetector(), max_retries=0)
        config = ProxyConfig(upstream=chatbot.base_url, port=0, mode=request.param, api_keys=(KEY,))
        with ProxyServer(config, guard=guard) as proxy:
            yield proxy.base_url.removesuffix("/v1")


# The document is the app's own; the calls go over HTTP to the proxy the fixture serves.
schema = schemathesis.openapi.from_dict(
    create_app(ProxyConfig(upstream="http://127.0.0.1:9/v1", guard_url="http://127.0.0.1:9/v1")).openapi()
)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_proxy_conforms_to_its_openapi_document(case: schemathesis.Case, proxy_url: str) -> None:
    case.call_and_validate(base_url=proxy_url, headers={"authorization": f"Bearer {KEY}"}, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_without_a_key_the_proxy_answers_401_as_documented(case: schemathesis.Case, proxy_url: str) -> None:
    response = case.call_and_validate(
        base_url=proxy_url,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
    if case.method.upper() == case.operation.method.upper():  # negative cases also try other methods (405)
        assert response.status_code == (200 if case.path == "/health" else 401)

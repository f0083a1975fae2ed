"""``tarsguard eval`` on a real vLLM server: a stratified 40-prompt XSTest sample, its report opened in Chromium.

The server runs the SmolLM2 stand-in, NOT a safety model: nothing here asserts which decisions it gets, only
that the harness runs every item through the real server, writes the journal, summary and report, and that
the report's plots render in a real browser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tarsguard import Decision
from tests.support.standin import REPO_ROOT, SERVED_NAME

DATA = Path(os.environ.get("TARSGUARD_EVAL_DATA", REPO_ROOT.parent / "shared" / "data"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# Reports every <img>'s natural width on <body> once the page has loaded.
IMAGE_PROBE = (
    "<script>window.addEventListener('load', () => { document.body.setAttribute('data-img-widths', "
    "Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0).join(',')); });</script>"
)


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)  # in CI the check must run, never silently skip
    pytest.skip(message)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        _missing("chromium is not installed (apt-get install -y chromium)")
    assert found is not None
    return found


def _browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_xstest_sample_report_renders(vllm_base_url: str, tmp_path: Path) -> None:
    if not (DATA / "xstest" / "xstest_prompts.csv").is_file():
        _missing(f"XSTest data not found under {DATA} (set TARSGUARD_EVAL_DATA)")
    chromium = _chromium()
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "tarsguard", "eval", "xstest",
        "--data", str(DATA), "--output", str(out), "--limit", "40",
        "--base-url", vllm_base_url, "--max-tokens", "96", "--concurrency", "8",
        "--title", "XSTest sample: SmolLM2-135M stand-in (NOT a safety model)",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    results = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert len(results) == 40 == len({r["id"] for r in results})
    assert all(r.get("error") is None and r["decision"] in set(Decision) for r in results)
    assert {r["model"] for r in results} == {SERVED_NAME}
    assert all(r["completion_tokens"] and r["completion_tokens"] <= 96 for r in results)
    assert Counter(r["expected"] for r in results) == {"comply": 22, "refuse": 18}  # 250:200 of 40
    assert len({r["category"] for r in results}) == 18  # every XSTest type is sampled

    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 40 and summary["models"] == [SERVED_NAME]
    assert summary["overall"]["errors"] == 0
    counts = Counter(r["decision"] for r in results)
    assert {d: summary["overall"][d] for d in counts} == dict(counts)

    # A screenshot of the report, as a person would see it.
    page = out / "report.html"
    screenshot = tmp_path / "report.png"
    shot = _browse(chromium, tmp_path / "profile-1", f"--screenshot={screenshot}", "--window-size=1200,3000",
                   page.as_uri())  # fmt: skip
    assert screenshot.is_file(), shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.size == (1200, 3000)
        assert len(image.convert("L").resize((60, 150)).getcolors(256) or ()) > 20  # not a blank page

    # The same page with a probe that reports each plot's decoded width.
    html = page.read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    dom = _browse(chromium, tmp_path / "profile-2", "--dump-dom", "--virtual-time-budget=10000", probed.as_uri())
    match = re.search(r'data-img-widths="([0-9,]*)"', dom.stdout)
    assert match, dom.stderr[-2000:]
    widths = [int(w) for w in match.group(1).split(",")]
    assert len(widths) == 3 and all(w > 300 for w in widths), widths

"""What ``import tarsguard`` costs over importing pydantic and httpx alone, and what it must not import.

Each sample is a fresh interpreter that imports pydantic and httpx, then tarsguard, then uses it (imports
``Guard`` and ``Verdict`` and constructs a ``Guard`` for an HTTP server: this loads the whole check pipeline,
pydantic's model machinery and asyncio), timing each step. Public names load on first use (PEP 562), so the
two costs are reported apart. Target (issue 2): ``import tarsguard`` adds at most 50 ms, and none of torch,
transformers, vllm or langchain is imported, even after use.

    .venv/bin/python bench/import_time.py [--samples 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

HEAVY = ("torch", "transformers", "vllm", "langchain", "langchain_core", "typer", "rich", "tenacity", "openai")
PROBE = """
import json, sys, time
t0 = time.perf_counter()
import pydantic, httpx
t1 = time.perf_counter()
before = set(sys.modules)
import tarsguard
t2 = time.perf_counter()
from tarsguard import Guard, Verdict
Guard(base_url="http://127.0.0.1:9/v1")
t3 = time.perf_counter()
heavy = sorted(m for m in {heavy!r} if m in sys.modules and m not in before)
print(json.dumps({{"base": t1 - t0, "import": t2 - t1, "use": t3 - t2, "heavy": heavy}}))
"""


def sample() -> dict[str, float | list[str]]:
    code = PROBE.format(heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result: dict[str, float | list[str]] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()
    sample()  # warm the file-system cache and bytecode
    runs = [sample() for _ in range(args.samples)]
    heavy = sorted({m for run in runs for m in run["heavy"]})  # type: ignore[union-attr]

    def row(label: str, key: str) -> str:
        values = [float(run[key]) * 1000 for run in runs]  # type: ignore[arg-type]
        return f"| {label} | {statistics.median(values):.1f} ms | {min(values):.1f} ms |"

    print(f"{args.samples} fresh interpreters")
    print("| step (in this order, one process) | median | min |")
    print("|---|---:|---:|")
    print(row("import pydantic, httpx", "base"))
    print(row("then `import tarsguard`", "import"))
    print(row("then `from tarsguard import Guard, Verdict` + `Guard(base_url=...)`", "use"))
    print(f"brought in by tarsguard, even after use: {', '.join(heavy) or 'none'} (checked: {', '.join(HEAVY)})")


if __name__ == "__main__":
    main()

"""How much ``import tarsguard`` adds over importing pydantic and httpx alone, and what it must not import.

Each sample is a fresh interpreter that imports pydantic and httpx, then tarsguard, timing each step;
samples alternate with interpreters that import only pydantic and httpx, so both are measured side by side.
Target (issue 2): at most 50 ms added, and none of torch, transformers, vllm, langchain imported.

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
if {with_tarsguard}:
    import tarsguard
t2 = time.perf_counter()
heavy = sorted(m for m in {heavy!r} if m in sys.modules and m not in before)
print(json.dumps({{"base": t1 - t0, "tarsguard": t2 - t1, "total": t2 - t0, "heavy": heavy}}))
"""


def sample(with_tarsguard: bool) -> dict[str, object]:
    code = PROBE.format(with_tarsguard=with_tarsguard, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result: dict[str, object] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()
    sample(True)  # warm the file-system cache and bytecode
    base_only: list[float] = []
    with_tg: list[float] = []
    added: list[float] = []
    heavy: set[str] = set()
    for _ in range(args.samples):
        plain = sample(False)
        full = sample(True)
        base_only.append(float(plain["total"]))  # type: ignore[arg-type]
        with_tg.append(float(full["total"]))  # type: ignore[arg-type]
        added.append(float(full["tarsguard"]))  # type: ignore[arg-type]
        heavy.update(full["heavy"])  # type: ignore[arg-type]
    ms = 1000.0
    print(f"{args.samples} fresh interpreters each, alternating")
    print("| measure | median | min |")
    print("|---|---:|---:|")
    print(f"| import pydantic, httpx | {statistics.median(base_only) * ms:.1f} ms | {min(base_only) * ms:.1f} ms |")
    print(
        f"| import pydantic, httpx, tarsguard | {statistics.median(with_tg) * ms:.1f} ms | {min(with_tg) * ms:.1f} ms |"
    )
    print(f"| added by tarsguard (same process) | {statistics.median(added) * ms:.1f} ms | {min(added) * ms:.1f} ms |")
    print(f"modules of {', '.join(HEAVY)} that `import tarsguard` brought in: {', '.join(sorted(heavy)) or 'none'}")


if __name__ == "__main__":
    main()

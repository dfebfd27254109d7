"""``make bench``: a benchmark runner (not timed tests).

Every module ``bench/bench_*.py`` exposes ``run() -> dict[str, float]`` returning named figures,
each with the floor it is compared with measured in the same run (``<name>`` and, for a ratio,
``<name>_floor...``).  Results go to ``bench/results.json`` (one flat JSON object) and a table.
Run one area: ``python -m bench startup``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    modules = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    results: dict[str, float] = {}
    out = HERE / "results.json"
    if wanted and out.exists():
        results.update(json.loads(out.read_text()))
    failed = []
    for name in modules:
        area = name.removeprefix("bench_")
        if wanted and area not in wanted:
            continue
        print(f"== {area}", flush=True)
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(f"bench.{name}")
            figures = mod.run()
        except Exception as exc:  # report and go on: one broken area must not hide the others
            print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
            failed.append(area)
            continue
        for k, v in figures.items():
            results[k] = round(float(v), 6)
            print(f"   {k:<40} {v:>14.6g}", flush=True)
        print(f"   ({time.monotonic() - t0:.1f}s)", flush=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {out.relative_to(HERE.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

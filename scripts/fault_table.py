"""Run the whole fault-injection suite (tests/faults/) and print the table of
docs/reliability.md: per area, how many hostile cases were tried and which outcome class
each fell into. Exit status 1 if any case did not get its expected outcome.

    OMP_NUM_THREADS=1 python scripts/fault_table.py [--area PREFIX] [--list-unexpected]

Takes a few minutes on 2 CPU cores (most of it the kill -9 cases, each a child process)."""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.harness import expected  # noqa: E402
from tests.faults.registry import all_cases  # noqa: E402
from tests.faults.runner import format_table, run_cases  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--area", help="only the rows whose name starts with this")
    args = p.parse_args()
    cases = [c for c in all_cases() if args.area is None or c.area.startswith(args.area)]
    started = time.perf_counter()
    results = run_cases(cases, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - started
    print(format_table([(c, o) for c, o, _ in results]))
    wrong = [c for c, o, _ in results if not expected(c, o)]
    print(f"\n{len(results)} cases in {seconds:.0f} s on {platform.machine()} "
          f"({platform.processor() or platform.system()}); {len(wrong)} without their expected outcome")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())

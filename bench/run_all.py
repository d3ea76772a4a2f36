"""Run every benchmark and print its figures (`make bench`).

Each benchmark runs in its own Python process, one after the other, so one's memory and
threads do not count in the other's figures. These print figures against the goals; they
are not pass/fail tests: the exit status is non-zero only if a benchmark could not complete
its calls (or crashed), not when a goal is missed.

    .venv/bin/python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = [
    ("dial_latency.py", [], ["--calls", "40"]),
    ("concurrent_calls.py", [], ["--window", "3"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description="run every benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter windows")
    args = parser.parse_args()
    status = 0
    started = time.monotonic()
    for script, normal, quick in BENCHMARKS:
        command = [sys.executable, str(HERE / script), *(quick if args.quick else normal)]
        print(f"\n$ {' '.join(Path(c).name if c.endswith('.py') else c for c in command[1:])}")
        sys.stdout.flush()
        try:
            result = subprocess.run(command, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            print(f"{script}: did not finish within 300 s")
            status = 1
            continue
        if result.returncode:
            print(f"{script}: exit status {result.returncode}")
            status = 1
    print(f"\nall benchmarks done in {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())

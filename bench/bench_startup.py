"""Time from process start to /v2/health/ready: the PyInstaller binary vs `python -m edge_runner`, digits only.

Usage: python -m bench.bench_startup [--binary dist/edge-runner] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import start_server, stop


def time_to_ready(command: list[str], runs: int) -> list[float]:
    """Seconds from spawn to ready, ``runs`` times."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            proc, _ = start_server(Path(tmp), ["--models", "digits"], command=command)
            times.append(time.perf_counter() - start)
            stop(proc)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", type=Path, default=Path("dist/edge-runner"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not args.binary.is_file():
        print(f"{args.binary} not found: build it with 'make binary'")
        return 1
    binary = time_to_ready([str(args.binary.resolve())], args.runs)
    python = time_to_ready([sys.executable, "-m", "edge_runner"], args.runs)
    size_mb = args.binary.stat().st_size / 1e6
    print(
        f"binary {args.binary} {size_mb:.1f} MB: median {statistics.median(binary):.2f}s to ready "
        f"(runs {', '.join(f'{t:.2f}' for t in binary)})"
    )
    print(
        f"python -m edge_runner: median {statistics.median(python):.2f}s (runs {', '.join(f'{t:.2f}' for t in python)})"
    )
    print(f"ratio binary/python: {statistics.median(binary) / statistics.median(python):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

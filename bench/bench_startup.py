"""Time from process start to /v2/health/ready with digits loaded: the PyInstaller one-file and one-folder
binaries vs `python -m edge_runner` (the baseline), measured in the same run, interleaved.

With --llm, also tiny-llm's decode speed (greedy /v1/completions, 512 tokens) on the one-folder binary, whose
llama.cpp is the portable baseline build, against the venv's llama-cpp-python (built -march=native by pip).

Usage: python -m bench.bench_startup [--binary dist/edge-runner-linux-x86_64]
       [--folder dist/edge-runner-linux-x86_64.d/edge-runner] [--runs 5] [--llm]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import start_server, stop

NAME = f"edge-runner-linux-{platform.machine()}"


def time_to_ready(command: list[str]) -> float:
    """Seconds from spawn to ready, once, with a fresh repository and cache."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc, _ = start_server(Path(tmp), ["--models", "digits", "--model-repository", tmp], command=command)
        elapsed = time.perf_counter() - start
        stop(proc)
    return elapsed


def tokens_per_second(url: str, max_tokens: int) -> float:
    """Greedy completion of ``max_tokens`` tokens from tiny-llm; generated tokens per wall-clock second."""
    body = {"model": "tiny-llm", "prompt": "The import system", "max_tokens": max_tokens, "temperature": 0}
    request = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        usage = json.loads(response.read())["usage"]
    return float(usage["completion_tokens"]) / (time.perf_counter() - start)


def llm_speed(commands: dict[str, list[str]], runs: int) -> None:
    """tiny-llm decode speed per command, servers up side by side, requests interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        for i, (label, command) in enumerate(commands.items()):
            repo = Path(tmp) / str(i)
            repo.mkdir()
            args = ["--models", "tiny-llm", "--model-repository", str(repo), "--max-seq-len", "1024"]
            servers[label] = start_server(repo, args, command=command)
        try:
            for _, url in servers.values():
                tokens_per_second(url, 16)  # warm-up
            speeds: dict[str, list[float]] = {label: [] for label in servers}
            for _ in range(runs):
                for label, (_, url) in servers.items():
                    speeds[label].append(tokens_per_second(url, 512))
        finally:
            for proc, _ in servers.values():
                stop(proc)
    base = statistics.median(speeds["python -m edge_runner"])
    for label, values in speeds.items():
        median = statistics.median(values)
        print(
            f"tiny-llm decode, {label}: median {median:.0f} tok/s, {median / base:.2f}x python "
            f"(runs {', '.join(f'{v:.0f}' for v in values)})"
        )


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", type=Path, default=Path("dist") / NAME, help="one-file binary")
    parser.add_argument("--folder", type=Path, default=Path("dist") / f"{NAME}.d" / "edge-runner", help="one-folder")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--llm", action="store_true", help="also tiny-llm decode speed, one-folder vs python")
    args = parser.parse_args()
    commands = {"python -m edge_runner": [sys.executable, "-m", "edge_runner"]}
    sizes = {"python -m edge_runner": "-"}
    for label, path, size in (
        (f"one-file {args.binary}", args.binary, lambda p: p.stat().st_size),
        (f"one-folder {args.folder}", args.folder, lambda p: folder_size(p.parent)),
    ):
        if not path.is_file():
            print(f"{path} not found: build it with 'make binary'")
            return 1
        commands[label] = [str(path.resolve())]
        sizes[label] = f"{size(path) / 1e6:.1f} MB"
    for command in commands.values():  # warm the page cache once, untimed
        time_to_ready(command)
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(args.runs):  # interleaved, so drift of the shared machine hits every variant alike
        for label, command in commands.items():
            times[label].append(time_to_ready(command))
    base = statistics.median(times["python -m edge_runner"])
    for label, runs in times.items():
        median = statistics.median(runs)
        print(
            f"{label} ({sizes[label]}): median {median:.2f}s to ready, {median / base:.2f}x python "
            f"(runs {', '.join(f'{t:.2f}' for t in runs)})"
        )
    if args.llm:
        folder = f"one-folder {args.folder}"
        llm_speed({"python -m edge_runner": commands["python -m edge_runner"], folder: commands[folder]}, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory footprint of real edge-runner servers (issue 13), today's behaviour and the old one side by side.

Every figure is psutil's ``memory_full_info`` of a real ``edge-runner serve`` process on loopback (RSS, PSS,
USS in MiB), or of a child interpreter that builds the same server in stages (the breakdown). The old behaviour
is selected by settings in the same run: ``--lazy-models ''`` loads the OpenVINO/TFLite twins at start and
``--kv-preallocate`` allocates the LLM KV cache of every slot at load.

1. Baselines: a bare interpreter and ``python -c 'import edge_runner'``.
2. Breakdown, one stage at a time in one process: interpreter, numpy, edge_runner's serving imports, each
   runtime's import, each model's load, the tiny-llm KV cache after one request.
3. Servers: what ``make serve`` loads (no models named), digits + tiny-llm idle and after one chat request,
   digits alone (and which runtimes' libraries each server has mapped).
4. Two servers on one ~100 MB GGUF vs one (summed PSS), idle and after one request each, for the old KV
   cache (every slot at load), the grown one (f16) and q8_0.

Usage: python -m bench.bench_footprint [--workdir DIR] [--no-big]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

MIB = float(2**20)
#: a library path fragment that shows a runtime is loaded in a process
RUNTIME_LIBS = {
    "onnxruntime": "onnxruntime/capi",
    "openvino": "libopenvino",
    "tflite": "ai_edge_litert",
    "llama_cpp": "libllama",
}
OLD = ["--lazy-models", "", "--kv-preallocate"]


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS and USS of a process, in MiB."""
    info = psutil.Process(pid).memory_full_info()
    return {"rss": info.rss / MIB, "pss": info.pss / MIB, "uss": info.uss / MIB}


def runtimes_mapped(pid: int) -> list[str]:
    """The runtimes whose shared libraries the process has mapped (i.e. imported)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [name for name, fragment in RUNTIME_LIBS.items() if fragment in maps]


def child_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNNER_")}
    env.update({"EDGE_RUNNER_MODEL_REPOSITORY": str(tmp / "repo"), "EDGE_RUNNER_CACHE_DIR": str(tmp / "cache")})
    return env


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.request  # not at the top: it pulls in ssl, which the --stages child must not count

    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def chat(url: str, model: str) -> None:
    """One greedy chat request (32 tokens)."""
    body = {"model": model, "messages": [{"role": "user", "content": "What is a generator?"}], "max_tokens": 32}
    post(url + "/v1/chat/completions", {**body, "temperature": 0})


@contextmanager
def server(args: list[str], tmp: Path) -> Iterator[tuple[int, str]]:
    """A real ``edge-runner serve`` on a free loopback port, settled after ready; (pid, url)."""
    from bench.common import start_server, stop  # not at the top: the --stages child must start bare

    folder = Path(tempfile.mkdtemp(dir=tmp))
    proc, url = start_server(folder, args, env=child_env(folder))
    try:
        time.sleep(1.0)  # the start-up thread has finished; allocator and page-cache state settle
        yield proc.pid, url
    finally:
        stop(proc)


def fmt(m: dict[str, float]) -> str:
    return f"RSS {m['rss']:6.1f}  PSS {m['pss']:6.1f}  USS {m['uss']:6.1f}"


# -- 1. baselines --------------------------------------------------------------------------------------------

SELF = "import json, psutil; m = psutil.Process().memory_full_info(); print(json.dumps([m.rss, m.pss, m.uss]))"


def baseline(code: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code + "\n" + SELF], capture_output=True, text=True, check=True)
    rss, pss, uss = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rss": rss / MIB, "pss": pss / MIB, "uss": uss / MIB}


# -- 2. breakdown --------------------------------------------------------------------------------------------


def stages(old: bool) -> None:
    """Child mode: build the server's pieces one at a time and print each stage's memory as JSON lines."""
    me = os.getpid()

    def mark(stage: str) -> None:
        print(json.dumps({"stage": stage, **memory(me)}), flush=True)

    mark("interpreter (+psutil)")
    import numpy  # noqa: F401

    mark("numpy")
    import waitress  # noqa: F401

    import edge_runner.cli.serve
    import edge_runner.server.app

    mark("edge_runner serving imports (falcon, waitress, prometheus)")
    from dataclasses import replace

    from edge_runner.backends.registry import get_backend
    from edge_runner.config.profiles import load_profile
    from edge_runner.config.settings import Settings
    from edge_runner.core.generation import GenerationRequest, SamplingParams
    from edge_runner.server.app import create_app

    tmp = tempfile.mkdtemp()
    settings = replace(
        Settings(), model_repository=tmp + "/repo", cache_dir=tmp + "/cache", log_level="warning", kv_preallocate=old
    )
    manager = edge_runner.cli.serve.build_manager(settings, load_profile("cpu"))
    create_app(manager, settings, {"ready": False})
    mark("manager + app built")
    for runtime, model in (
        ("onnxruntime", "digits"),
        ("llama_cpp", "tiny-llm"),
        ("openvino", "digits-openvino"),
        ("tflite", "digits-tflite"),
    ):
        get_backend(runtime).probe()  # imports the runtime
        mark(f"import {runtime}")
        entry = manager.load(model)[0]
        mark(f"load {model}")
        if runtime == "llama_cpp":
            params = SamplingParams(max_tokens=32, temperature=0.0)
            request = GenerationRequest(messages=({"role": "user", "content": "What is a generator?"},), params=params)
            for _ in entry.backend.generate(request):
                pass
            mark("tiny-llm after one request")
    manager.close()


def breakdown(old: bool) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "bench.bench_footprint", "--stages"] + (["--old"] if old else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def print_breakdown() -> None:
    new, old = breakdown(False), breakdown(True)
    print("\n## Breakdown (one process, stage by stage; RSS MiB, + = growth over the previous stage)")
    print(f"{'stage':58s} {'today':>16s} {'KV at load (old)':>18s}")
    prev_n = prev_o = 0.0
    for n, o in zip(new, old, strict=True):
        print(
            f"{n['stage']:58s} {n['rss']:6.1f} (+{n['rss'] - prev_n:5.1f}) {o['rss']:8.1f} (+{o['rss'] - prev_o:5.1f})"
        )
        prev_n, prev_o = n["rss"], o["rss"]


# -- 3. servers ----------------------------------------------------------------------------------------------


def print_servers(tmp: Path) -> dict[str, float]:
    print("\n## Servers (idle after ready; MiB)")
    figures: dict[str, float] = {}
    rows = [
        ("make serve (no models named): today", [], None),
        ("make serve: old (twins + every KV slot at load)", OLD, None),
        ("digits + tiny-llm: today", ["--models", "digits,tiny-llm"], "tiny-llm"),
        ("digits + tiny-llm: old (every KV slot at load)", ["--models", "digits,tiny-llm", "--kv-preallocate"], None),
        ("digits only (ONNX)", ["--models", "digits"], None),
    ]
    for label, args, chat_model in rows:
        with server(args, tmp) as (pid, url):
            idle = memory(pid)
            figures[label] = idle["rss"]
            print(f"{label:52s} {fmt(idle)}  runtimes: {', '.join(runtimes_mapped(pid))}")
            if chat_model:
                chat(url, chat_model)
                time.sleep(0.3)
                used = memory(pid)
                figures[label + ", after one chat"] = used["rss"]
                print(f"{label + ', after one chat':52s} {fmt(used)}")
    return figures


# -- 4. two servers on one GGUF ------------------------------------------------------------------------------


def print_two_servers(gguf: Path, tmp: Path) -> None:
    print(f"\n## Two servers on one GGUF ({gguf.stat().st_size / MIB:.0f} MiB, 4 slots x 2048 tokens): summed PSS")
    base = ["--model-path", str(gguf), "--model-name", "big"]
    modes = {
        "old: every KV slot at load": ["--kv-preallocate"],
        "today: KV grows with use (f16)": [],
        "today + kv_cache_type q8_0": ["--kv-cache-type", "q8_0"],
    }
    print(f"{'mode':34s} {'state':22s} {'one PSS':>8s} {'two PSS':>8s} {'ratio':>6s}")
    for label, extra in modes.items():
        with server(base + extra, tmp) as (pid_a, url_a):
            one_idle = memory(pid_a)["pss"]
            with server(base + extra, tmp) as (pid_b, url_b):
                second = memory(pid_b)
                two_idle = memory(pid_a)["pss"] + second["pss"]
                holds = f"second server idle: {fmt(second)}, runtimes: {', '.join(runtimes_mapped(pid_b))}"
                chat(url_a, "big")
                chat(url_b, "big")
                time.sleep(0.3)
                second = memory(pid_b)
                two_used = memory(pid_a)["pss"] + second["pss"]
                holds += f"; after one request: {fmt(second)}"
            time.sleep(0.5)
            one_used = memory(pid_a)["pss"]  # alone again, after its request
        for state, one, two in (("idle", one_idle, two_idle), ("after one request each", one_used, two_used)):
            print(f"{label:34s} {state:22s} {one:8.1f} {two:8.1f} {two / one:5.2f}x")
        print(f"{'':34s} {holds}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "edge-runner-bench-llm")
    parser.add_argument("--no-big", action="store_true", help="skip the two-servers-on-one-GGUF part")
    parser.add_argument("--stages", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--old", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages:
        stages(args.old)
        return 0
    print("## Baselines (MiB)")
    print(f"{'bare interpreter (+psutil)':52s} {fmt(baseline('pass'))}")
    print(f"{'python -c import edge_runner':52s} {fmt(baseline('import edge_runner'))}")
    print_breakdown()
    with tempfile.TemporaryDirectory() as tmp:
        figures = print_servers(Path(tmp))
        today, old = (
            figures["make serve (no models named): today"],
            figures["make serve: old (twins + every KV slot at load)"],
        )
        pair = figures["digits + tiny-llm: today"]
        pair_old = figures["digits + tiny-llm: old (every KV slot at load)"]
        print(f"make serve RSS: {today:.1f} vs {old:.1f} MiB old ({today / old:.2f}x)")
        print(f"digits + tiny-llm idle RSS: {pair:.1f} vs {pair_old:.1f} MiB old ({pair / pair_old:.2f}x)")
        if not args.no_big:
            from bench.bench_llm import build_big

            args.workdir.mkdir(parents=True, exist_ok=True)
            print_two_servers(build_big(args.workdir), Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

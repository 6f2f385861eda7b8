"""The serve loop: build the manager, load models, run waitress, drain on SIGTERM."""

from __future__ import annotations

import logging
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from edge_runner.config.profiles import Profile
from edge_runner.config.settings import Settings
from edge_runner.core.errors import EdgeRunnerError
from edge_runner.core.paths import DEFAULTS_DIR
from edge_runner.repository.store import ModelRepository
from edge_runner.server.ops import AdmissionMiddleware
from edge_runner.server.security import is_loopback
from edge_runner.serving.metrics import Metrics
from edge_runner.serving.model_manager import ModelManager

log = logging.getLogger("edge_runner.cli.serve")


def build_manager(settings: Settings, profile: Profile, metrics: Metrics | None = None) -> ModelManager:
    """Repository (+ embedded defaults) or the single external model of the seed form."""
    external: dict[str, Path] = {}
    if settings.model_path:
        external[settings.model_name or Path(settings.model_path).stem] = Path(settings.model_path)
    extra = [DEFAULTS_DIR] if settings.load_defaults and not external else []
    repository = ModelRepository(settings.repository_root(), extra_roots=extra)
    removed = repository.cleanup_stale()
    if removed:
        log.warning("removed %d unfinished import(s) left by a crash: %s", len(removed), removed)
    return ModelManager(settings, repository, profile, external, metrics)


def load_startup_models(
    manager: ModelManager, names: tuple[str, ...], state: dict[str, bool] | None = None
) -> list[str]:
    """Load the named models (when empty: all but the ``lazy_models``, which load on their first request);
    a failing model is logged and skipped. Returns failures.

    Stops early once ``state['draining']`` is set (SIGTERM during start-up).
    """
    failures = []
    lazy = set(manager.settings.lazy_models)
    for name in names or tuple(n for n in manager.model_names() if n not in lazy):
        if state is not None and state.get("draining"):
            log.info("SIGTERM during start-up: not loading the remaining models")
            break
        try:
            manager.load(name)
        except EdgeRunnerError as exc:
            failures.append(f"{name}: {exc.message}")
            log.error("not serving %s: %s", name, exc.message)
    return failures


#: after the last in-flight request, time for waitress to write the final answers before the loop stops
FLUSH_GRACE_S = 0.25


def _drain_then_interrupt(manager: ModelManager, inflight: AdmissionMiddleware, deadline: float) -> None:
    while time.monotonic() < deadline:
        busy = inflight.in_flight + sum(m.in_flight() for m in manager.loaded())
        if busy == 0:
            break
        time.sleep(0.05)
    time.sleep(FLUSH_GRACE_S)
    os.kill(os.getpid(), signal.SIGINT)


def _sigterm_handler(
    manager: ModelManager, state: dict[str, bool], inflight: AdmissionMiddleware, drain_s: float
) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        if state.get("draining"):
            return
        log.info("SIGTERM: draining in-flight requests (max %.0fs); new work gets 503 + Retry-After", drain_s)
        state["draining"] = True
        # Keep accepting connections: a request that arrives now gets an explicit 503 + Retry-After (and
        # readiness turns 503), instead of waiting in the listen backlog to be reset when the process exits.
        inflight.draining = True
        threading.Thread(
            target=_drain_then_interrupt, daemon=True, args=(manager, inflight, time.monotonic() + drain_s)
        ).start()

    return handler


def _reap_forever(manager: ModelManager, state: dict[str, bool], interval_s: float = 1.0) -> None:
    """Unload models idle past their keep-alive until shutdown."""
    while not state.get("draining"):
        manager.reap_idle()
        time.sleep(interval_s)


#: request bodies held in memory up to this size (at most; see body_in_memory_bytes); larger ones go to a file
BODY_IN_MEMORY_BYTES = 8 * 2**20
#: bytes asked of the socket per read (waitress reads 8 KiB by default: 75 loop turns for a 600 KB tensor). A read
#: returns what the socket holds, so small requests cost the same; a 3 MB JSON tensor arrives in fewer, larger
#: pieces, each appended to waitress's body buffer under the GIL (MobileNetV2 JSON at c=8: +7% over 256 KiB)
RECV_BYTES = 4 * 2**20


def body_in_memory_bytes(settings: Settings) -> int:
    """How much of each request body waitress keeps in memory: up to 8 MiB, but so that every allowed
    connection holding that much together stays within a quarter of the machine's RAM (waitress's own
    512 KiB is the floor)."""
    import psutil

    share = int(psutil.virtual_memory().total) // (4 * max(1, settings.connection_limit))
    return max(512 * 2**10, min(BODY_IN_MEMORY_BYTES, share, settings.max_body_bytes))


#: worker threads kept beyond the admission limit, so health, metrics and ps never wait behind model work
RESERVED_THREADS = 8


def worker_threads(settings: Settings) -> int:
    """``http_threads``, raised so admitted work can never occupy every thread."""
    if settings.max_concurrent_requests == 0:
        log.warning("max_concurrent_requests is 0 (no limit): under load, health probes can wait behind work")
        return settings.http_threads
    return max(settings.http_threads, settings.max_concurrent_requests + RESERVED_THREADS)


#: glibc malloc arenas the server uses (glibc's own default is 8 per core)
MALLOC_ARENAS = 2
#: glibc's ``mallopt`` parameter number for the arena limit
M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, unless ``MALLOC_ARENA_MAX`` in the environment already says how many.

    Each worker thread that frees a large request body otherwise keeps the memory in an arena of its own: after
    MobileNetV2 JSON load (3 MB bodies, 8 clients) the server held 424 MiB RSS with glibc's default and 278 MiB
    with 2 arenas, at the same throughput. Returns whether the cap was set (not on other C libraries).
    """
    if os.environ.get("MALLOC_ARENA_MAX") or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))  # the process's own C library
    except (OSError, AttributeError):
        return False


def serve(settings: Settings, profile: Profile, ready_file: Path | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    import waitress

    limit_malloc_arenas()  # before the model runtimes and waitress start their threads

    from edge_runner.server.app import create_app

    metrics = Metrics() if settings.enable_metrics else None
    manager = build_manager(settings, profile, metrics)
    state: dict[str, bool] = {"ready": False}
    inflight = AdmissionMiddleware(settings.max_concurrent_requests, metrics)
    app = create_app(manager, settings, state, admission=inflight)
    server = waitress.create_server(
        app,
        host=settings.host,
        port=settings.port,
        threads=worker_threads(settings),
        connection_limit=settings.connection_limit,
        channel_timeout=max(1, int(settings.channel_timeout)),
        cleanup_interval=max(1, int(settings.channel_timeout) // 3),
        # lets a request see that its client left (non-streamed generation is cancelled then)
        channel_request_lookahead=1,
        max_request_body_size=settings.max_body_bytes + 1,
        # request bodies up to this size stay in memory (waitress spills larger ones to a temporary file: at its
        # 512 KiB default a 600 KB MobileNet tensor went to disk on every request), read in large chunks
        inbuf_overflow=body_in_memory_bytes(settings),
        recv_bytes=RECV_BYTES,
        ident="edge-runner",
        clear_untrusted_proxy_headers=True,
    )
    port = int(server.effective_port)
    if not is_loopback(settings.host) and not settings.api_key:
        log.warning(
            "SERVING WITHOUT AN API KEY ON %s: anyone who can reach this address can run and unload models; "
            "set --api-key / EDGE_RUNNER_API_KEY, or bind 127.0.0.1",
            settings.host,
        )
    print(f"edge-runner listening on http://{settings.host}:{port} (profile {profile.name})", flush=True)
    if ready_file is not None:
        ready_file.write_text(str(port))
    signal.signal(signal.SIGTERM, _sigterm_handler(manager, state, inflight, settings.drain_timeout))
    # The drain ends by sending ourselves SIGINT; a shell may have started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Models load while the server already answers: liveness is 200 and readiness 503 until they are in,
    # and a SIGTERM during a long load drains like any other (requests get 503 + Retry-After, not a reset).
    outcome: dict[str, int] = {"exit_code": 0}
    loader = threading.Thread(
        target=_load_then_ready, args=(manager, settings, state, outcome), daemon=True, name="startup-load"
    )
    threading.Thread(target=_reap_forever, args=(manager, state), daemon=True, name="keep-alive").start()
    try:
        loader.start()  # inside the try: a load that fails at once may interrupt us before server.run()
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if loader.is_alive():
            loader.join()  # a load in progress finishes before its memory is released
        manager.close()
    print("edge-runner stopped", file=sys.stderr, flush=True)
    return outcome["exit_code"]


def _prepare_external(manager: ModelManager, settings: Settings) -> list[str]:
    """Replace each external source that needs conversion with its (cached) conversion; returns failures."""
    from edge_runner.cli.prepare import servable_path

    failures = []
    for name, path in list(manager.external.items()):
        try:
            manager.external[name] = servable_path(path, name, settings, manager.profile)
        except EdgeRunnerError as exc:
            failures.append(f"{name}: {exc.message}")
            log.error("not serving %s: %s", name, exc.message)
    return failures


def _load_then_ready(
    manager: ModelManager, settings: Settings, state: dict[str, bool], outcome: dict[str, int]
) -> None:
    """Convert a ``--model-path`` source on first use, load the start-up models, then mark the server ready
    (or stop it when its one model cannot load)."""
    failures = _prepare_external(manager, settings)
    if not failures:
        failures = load_startup_models(manager, settings.models, state)
    if state.get("draining"):
        return
    if settings.model_path and failures:
        # Single-model mode (the seed's container line): a server without its one model must not look healthy.
        print(f"edge-runner: cannot serve {settings.model_path}: {'; '.join(failures)}", file=sys.stderr, flush=True)
        outcome["exit_code"] = 1
        os.kill(os.getpid(), signal.SIGINT)
        return
    state["ready"] = True
    loaded = ", ".join(f"{m.name}:v{m.version} [{m.backend.name}/{m.metadata.device}]" for m in manager.loaded())
    print(
        f"ready: {loaded or 'no models loaded'}" + (f"; failed: {'; '.join(failures)}" if failures else ""), flush=True
    )

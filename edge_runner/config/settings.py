"""Every setting in one typed table, layered: defaults < profile < config file < env < CLI.

Field metadata gives the help text, the converter from strings and any extra
env names (the seed's ``MAX_BATCH_SIZE`` etc.). CLI flags and ``EDGE_RUNNER_*``
env names are derived from field names, so nothing is declared twice.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge_runner.config.converters import (
    int_at_least,
    one_of,
    to_bool,
    to_float_at_least_zero,
    to_int_list,
    to_str_list,
)
from edge_runner.config.converters import (
    to_bytes as to_bytes,  # re-exported: other layers convert values with the same rules
)
from edge_runner.config.converters import (
    to_duration_s as to_duration_s,
)
from edge_runner.config.converters import (
    to_version_policy as to_version_policy,
)
from edge_runner.core.errors import ConfigError
from edge_runner.core.paths import bundled_profiles_dir, default_repository, default_trust_dir
from edge_runner.core.paths import cache_dir as xdg_cache_dir

ENV_PREFIX = "EDGE_RUNNER_"


def _setting(
    default: Any,
    help: str,
    conv: Callable[[Any], Any],
    env: tuple[str, ...] = (),
    secret: bool = False,
    flag: bool = True,
) -> Any:
    return field(default=default, metadata={"help": help, "conv": conv, "env": env, "secret": secret, "flag": flag})


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one edge-runner process."""

    host: str = _setting("127.0.0.1", "address to bind; loopback by default, 0.0.0.0 to expose", str)
    port: int = _setting(8000, "TCP port; 0 picks a free one (printed at start)", int_at_least(0, 65535))
    model_repository: str = _setting("", "model repository folder (default: $XDG_DATA_HOME/edge-runner/models)", str)
    profiles_dir: str = _setting("", "folder of profile .toml files (default: the built-in profiles)", str)
    models: tuple[str, ...] = _setting((), "models to load at start (comma list; default: all)", to_str_list)
    model_name: str = _setting("", "serve one model under this name (seed form, with --model-path)", str)
    model_path: str = _setting("", "path of the one model to serve (ONNX file or folder with manifest)", str)
    load_defaults: bool = _setting(True, "also serve the embedded default models (digits, tiny-llm)", to_bool)
    lazy_models: tuple[str, ...] = _setting(
        ("digits-openvino", "digits-tflite"),
        "models listed but not loaded at start: each loads on its first request, v2 infer included "
        "(comma list; '' loads every model at start)",
        to_str_list,
    )
    version_policy: str = _setting("latest", "versions to load: latest, latest:N, all, specific:1,2", to_version_policy)
    profile: str = _setting("cpu", "hardware profile name or .toml path (see profiles/)", str)
    backend: str = _setting(
        "",
        "pin models to this backend (onnxruntime, openvino, tflite, llama_cpp) when it "
        "serves their format; a manifest's own pin wins",
        str,
    )
    device: tuple[str, ...] = _setting(
        (), "device(s) to try first, before the profile's list (e.g. NPU, GPU, CUDAExecutionProvider)", to_str_list
    )
    threads: int = _setting(0, "intra-op threads per model; 0 = runtime default (all cores)", int_at_least(0))
    graph_optimization_level: str = _setting(
        "all",
        "ONNX Runtime graph optimizations: disable/basic/extended/all",
        one_of("disable", "basic", "extended", "all"),
    )
    dynamic_batching: bool = _setting(
        True, "stack concurrent requests into one batch", to_bool, env=("DYNAMIC_BATCHING",)
    )
    max_batch_size: int = _setting(8, "largest batch the batcher builds", int_at_least(1), env=("MAX_BATCH_SIZE",))
    max_queue_delay_ms: float = _setting(2.0, "how long the batcher waits to fill a batch", to_float_at_least_zero)
    preferred_batch_sizes: tuple[int, ...] = _setting((), "batch sizes to prefer (comma list)", to_int_list)
    instances: int = _setting(
        1, "worker threads per model calling the backend at once (capped by what the backend allows)", int_at_least(1)
    )
    max_queue_size: int = _setting(64, "queued requests per model before 429", int_at_least(1))
    max_concurrent_requests: int = _setting(
        32,
        "requests in flight across the server (streams until they end) before 429; 0 = no limit",
        int_at_least(0),
        env=("MAX_CONCURRENT_REQUESTS",),
    )
    request_timeout_ms: int = _setting(30000, "per-request deadline; past it the answer is 504", int_at_least(1))
    drain_timeout: float = _setting(
        20.0,
        "on SIGTERM, wait this long for in-flight requests and streams (e.g. 60s; keep it below the "
        "orchestrator's grace period)",
        to_duration_s,
    )
    max_body_bytes: int = _setting(64 * 2**20, "largest request body accepted (e.g. 64MiB)", to_bytes)
    http_threads: int = _setting(
        40,
        "waitress worker threads; at least max_concurrent_requests + 8 are started, so health, metrics and ps "
        "always find a free thread",
        int_at_least(1),
    )
    connection_limit: int = _setting(
        1000, "open client connections before new ones wait (half-open and idle ones count)", int_at_least(1)
    )
    channel_timeout: float = _setting(
        30.0, "close a connection idle (or sending nothing) this long, e.g. 30s", to_duration_s
    )
    api_key: str = _setting("", "require 'Authorization: Bearer KEY' on every route but liveness", str, secret=True)
    enable_metrics: bool = _setting(True, "serve Prometheus metrics at /metrics", to_bool)
    memory_budget: int = _setting(-1, "bytes all loaded models may use; auto = 80% of available RAM", to_bytes)
    keep_alive: float = _setting(-1.0, "unload a model idle this long (5m, 30s; -1 forever, 0 at once)", to_duration_s)
    max_seq_len: int = _setting(2048, "context length for LLMs", int_at_least(16))
    kv_cache_type: str = _setting(
        "f16", "LLM KV cache element type: f16, or q8_0 (about half the memory)", one_of("f16", "q8_0")
    )
    kv_preallocate: bool = _setting(
        False,
        "allocate the LLM KV cache of every slot at load; by default it grows with the streams in use "
        "(none while idle, then 1, 2, 4 slots)",
        to_bool,
    )
    use_mmap: bool = _setting(True, "memory-map weights where the runtime allows", to_bool)
    mlock: bool = _setting(False, "lock LLM weights in RAM (needs a raised memlock limit)", to_bool)
    quantization: str = _setting(
        "", "preferred quantization when a model has several (int8, fp16, q8_0)", str, env=("QUANTIZATION",)
    )
    cache_dir: str = _setting("", "compiled/optimized model cache (default: $XDG_CACHE_HOME/edge-runner)", str)
    log_level: str = _setting("info", "debug, info, warning or error", one_of("debug", "info", "warning", "error"))
    trust_dir: str = _setting(
        "",
        "folder of trusted Ed25519 public keys for bundles (default: $XDG_CONFIG_HOME/edge-runner/trusted-keys)",
        str,
    )
    require_signed_bundles: bool = _setting(
        False, "models import refuses bundles without a valid signature from a trusted key", to_bool
    )
    max_bundle_bytes: int = _setting(
        32 * 2**30, "largest total size of the files a bundle may unpack to (e.g. 8GiB)", to_bytes
    )
    allowed_origins: tuple[str, ...] = _setting(
        (),
        "browser origins allowed to call the API when bound to loopback (e.g. http://localhost:3000); "
        "other Origin headers get 403",
        to_str_list,
    )
    pull_registries: tuple[str, ...] = _setting(
        (),
        "OCI registries (host[:port]) that POST /api/pull may fetch from; empty: the server fetches nothing "
        "(a server-side fetch of any URL a client names would be a request forgery hole)",
        to_str_list,
    )
    url: str = _setting("http://127.0.0.1:8000", "server address the client verbs (ps, bench) talk to", str, flag=False)

    def repository_root(self) -> Path:
        """The writable model repository folder (resolved from XDG_DATA_HOME by ``load_config``)."""
        return Path(self.model_repository) if self.model_repository else default_repository({})

    def cache_root(self) -> Path:
        """The cache folder for optimized/compiled models (resolved from XDG_CACHE_HOME by ``load_config``)."""
        return Path(self.cache_dir) if self.cache_dir else xdg_cache_dir({})

    def trust_root(self) -> Path:
        """The folder of trusted public keys for bundle signatures (resolved from XDG by ``load_config``)."""
        return Path(self.trust_dir) if self.trust_dir else default_trust_dir({})

    def profiles_root(self) -> Path:
        """The folder profiles are looked up in by name."""
        return Path(self.profiles_dir) if self.profiles_dir else bundled_profiles_dir()


SETTING_NAMES = tuple(f.name for f in fields(Settings))


def env_names(name: str) -> tuple[str, ...]:
    """Env variables for a setting: ``EDGE_RUNNER_<NAME>`` then the seed's aliases."""
    meta = next(f for f in fields(Settings) if f.name == name).metadata
    return (ENV_PREFIX + name.upper(), *meta["env"])


@dataclass(frozen=True)
class Resolved:
    """Settings plus where each value came from (``default``, ``profile:cpu``, a file, an env var, ``cli``)."""

    settings: Settings
    sources: dict[str, str]


def convert_setting(name: str, value: Any, source: str) -> Any:
    """``value`` converted for setting ``name``; ConfigError naming the key and ``source`` when it is bad."""
    if name not in SETTING_NAMES:
        raise ConfigError(f"unknown setting {name!r} in {source}; known settings: {', '.join(SETTING_NAMES)}")
    conv = next(f for f in fields(Settings) if f.name == name).metadata["conv"]
    try:
        return conv(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value for {name!r} in {source}: {exc}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file of ``setting = value`` lines."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return data


def load_config(
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None = None,
    profile_settings: Mapping[str, Any] | None = None,
    profile_name: str = "",
) -> Resolved:
    """Pure layering of every source; raises ConfigError naming the key and where it came from."""
    values: dict[str, Any] = {}
    sources = {f.name: "default" for f in fields(Settings)}
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if profile_settings:
        layers.append((f"profile:{profile_name}", profile_settings))
    if config_file is not None:
        layers.append((str(config_file), read_config_file(config_file)))
    for source, table in layers:
        for key, value in table.items():
            values[key] = convert_setting(key, value, source)
            sources[key] = source
    for name in SETTING_NAMES:
        for env in env_names(name):
            if env in environ and not is_service_link(env, environ[env]):
                values[name] = convert_setting(name, environ[env], f"env {env}")
                sources[name] = f"env {env}"
                break
    for key, value in cli.items():
        values[key] = convert_setting(key, value, f"--{key.replace('_', '-')}")
        sources[key] = "cli"
    unknown_env = [
        k
        for k in environ
        if k.startswith(ENV_PREFIX)
        and k[len(ENV_PREFIX) :].lower() not in SETTING_NAMES
        and k not in _NON_SETTING_ENV
        and not is_service_link(k, environ[k])
    ]
    if unknown_env:
        raise ConfigError(f"unknown environment variable {unknown_env[0]}; known settings: {', '.join(SETTING_NAMES)}")
    # XDG folders are resolved here, from the same environment, so no other module reads it.
    if not values.get("model_repository"):
        values["model_repository"] = str(default_repository(environ))
    if not values.get("cache_dir"):
        values["cache_dir"] = str(xdg_cache_dir(environ))
    if not values.get("trust_dir"):
        values["trust_dir"] = str(default_trust_dir(environ))
    return Resolved(replace(Settings(), **values), sources)


# Kubernetes injects these for a Service named "edge-runner" in the namespace (enableServiceLinks):
# EDGE_RUNNER_SERVICE_HOST, EDGE_RUNNER_SERVICE_PORT[_NAME], EDGE_RUNNER_PORT=tcp://10.0.0.1:8000,
# EDGE_RUNNER_PORT_8000_TCP[_PROTO|_PORT|_ADDR]. They are not settings and must never stop the server.
_SERVICE_LINK = re.compile(r"(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)")
_SERVICE_URL = re.compile(r"(tcp|udp|sctp)://[^\s]+:[0-9]+")


def is_service_link(name: str, value: str) -> bool:
    """Whether ``name=value`` is a variable Kubernetes injected for a Service called ``edge-runner``."""
    if not name.startswith(ENV_PREFIX):
        return False
    rest = name[len(ENV_PREFIX) :]
    if rest == "PORT":
        return _SERVICE_URL.fullmatch(value.strip()) is not None
    return _SERVICE_LINK.fullmatch(rest) is not None


def service_links(environ: Mapping[str, str]) -> list[str]:
    """The Kubernetes service-link variables in ``environ`` (ignored; ``serve`` logs them once)."""
    return sorted(k for k, v in environ.items() if is_service_link(k, v))


#: the env name of the config file; it says where settings are, so it is not a setting itself
CONFIG_FILE_ENV = ENV_PREFIX + "CONFIG"
_NON_SETTING_ENV = {CONFIG_FILE_ENV}


def config_file_path(cli_path: str | None, environ: Mapping[str, str]) -> Path | None:
    """The config file: ``--config`` wins over ``EDGE_RUNNER_CONFIG``; None when neither is set."""
    chosen = cli_path or environ.get(CONFIG_FILE_ENV)
    return Path(chosen) if chosen else None


def describe(resolved: Resolved) -> list[dict[str, Any]]:
    """Rows for ``config --show``: name, value (secrets masked), source, env names, help."""
    rows = []
    for f in fields(Settings):
        value = getattr(resolved.settings, f.name)
        if f.metadata["secret"] and value:
            value = "***"
        rows.append(
            {
                "name": f.name,
                "value": value,
                "source": resolved.sources[f.name],
                "env": list(env_names(f.name)),
                "help": f.metadata["help"],
            }
        )
    return rows


def setting_fields() -> list[tuple[str, Any, str]]:
    """(name, default, help) of each setting, for generating CLI flags."""
    return [
        (f.name, f.default if f.default is not MISSING else None, f.metadata["help"])
        for f in fields(Settings)
        if f.metadata["flag"]
    ]

"""Hardware profiles: TOML files that say which devices to prefer and how to serve.

Interface used by the rest of the runtime:
- ``load_profile(name_or_path) -> Profile`` (``auto`` resolves through ``select_auto``)
- ``Profile.settings``: setting overrides (a config layer between defaults and the config file)
- ``Profile.backend_order`` / ``Profile.choose_backend(format)``: which backend serves a format
- ``Profile.load_options(backend_name, threads, cache_dir) -> LoadOptions``
- ``select_auto(facts) -> AutoChoice``: the profile ``auto`` picks from ``doctor``'s findings

The schema (``docs/profiles.md``) lives in ``edge_runner.config.profile_schema`` and is strict: unknown keys
and wrong types are ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_runner.backends.base import LoadOptions, ProbeResult, SelectionStep
from edge_runner.backends.registry import backends_serving, default_backend_for_format, get_backend, probe
from edge_runner.config.profile_schema import validate_profile
from edge_runner.core.errors import BackendUnavailable, ConfigError
from edge_runner.core.paths import bundled_profiles_dir

DEFAULT_BACKEND_ORDER = ("onnxruntime", "openvino", "tflite", "llama_cpp")


def profiles_dir(folder: Path | None = None) -> Path:
    """Where profiles are looked up by name: the ``profiles_dir`` setting, else the built-in ones."""
    return folder if folder is not None else bundled_profiles_dir()


@dataclass(frozen=True)
class Profile:
    """A parsed profile: setting overrides, backend preference and per-backend device preferences."""

    name: str
    path: Path | None
    settings: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    backend_order: tuple[str, ...] = DEFAULT_BACKEND_ORDER
    #: the converters' quantization preset (``converters.presets``) for models converted for this profile
    quantization_preset: str = "cpu"
    #: why this profile is in use when ``auto`` picked it; empty when named explicitly
    selected_by: str = ""

    def load_options(self, backend: str, threads: int = 0, cache_dir: Path | None = None) -> LoadOptions:
        """LoadOptions for ``backend``: its ``devices`` list and remaining keys as options.

        ``threads`` of 0 falls back to the profile's ``threads`` setting. The backend class reads its own
        table (``Backend.profile_options``), e.g. OpenVINO's static batch sizes default to the profile's
        ``preferred_batch_sizes``.
        """
        table = dict(self.backends.get(backend, {}))
        devices = tuple(str(d) for d in table.pop("devices", ()))
        use_mmap = bool(table.pop("use_mmap", True))
        with contextlib.suppress(BackendUnavailable):  # not importable here: its table is passed on as written
            table = get_backend(backend).profile_options(table, self.settings)
        threads = threads or int(self.settings.get("threads", 0))
        return LoadOptions(threads=threads, cache_dir=cache_dir, devices=devices, options=table, use_mmap=use_mmap)

    def backends_for(self, fmt: str) -> tuple[str, ...]:
        """Backends able to serve manifest format ``fmt``: this profile's order first, then the format's
        default backend, then any other registered backend (entry-point backends included)."""
        serving = backends_serving(fmt)
        default = default_backend_for_format(fmt)
        ordered = [n for n in self.backend_order if n in serving]
        ordered += [n for n in ([default] if default else []) + serving if n not in ordered]
        return tuple(dict.fromkeys(ordered))

    def choose_backend(self, fmt: str, pinned: str = "") -> tuple[str, tuple[SelectionStep, ...]]:
        """The backend to serve ``fmt`` with, and why; a ``pinned`` backend (manifest/CLI) wins.

        Walks ``backends_for(fmt)`` and takes the first whose runtime probes as available. Raises
        BackendUnavailable (naming every reason) when none is.
        """
        if pinned:
            return pinned, (SelectionStep(pinned, True, "pinned by the manifest or the command line"),)
        steps: list[SelectionStep] = []
        for name in self.backends_for(fmt):
            result = probe(name)
            if result.available:
                steps.append(SelectionStep(name, True, f"first available for {fmt} in profile {self.name}"))
                return name, tuple(steps)
            steps.append(SelectionStep(name, False, result.reason or "runtime unavailable"))
        why = "; ".join(f"{s.candidate}: {s.reason}" for s in steps) or "no backend serves this format"
        raise BackendUnavailable(f"no backend can serve format {fmt!r} under profile {self.name!r} ({why})")


@dataclass(frozen=True)
class AutoChoice:
    """The profile ``auto`` picked, the rule that matched, and the reason in words."""

    profile: str
    reason: str
    rule: int = -1


def list_profiles(folder: Path | None = None) -> list[str]:
    """Names of the profiles in ``folder`` (default: the built-in ones)."""
    folder = profiles_dir(folder)
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def _resolve_path(name_or_path: str, folder: Path | None) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    if path.suffix == ".toml" or os.sep in name_or_path:
        raise ConfigError(f"profile file {name_or_path} not found")
    path = profiles_dir(folder) / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(
            f"profile {name_or_path!r} not found; profiles: {', '.join(list_profiles(folder)) or 'none'}, "
            "or pass the path of a .toml file"
        )
    return path


def read_profile_file(path: Path) -> dict[str, Any]:
    """Parse and validate one profile file (no ``auto`` resolution)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"profile {path}: {exc}") from exc
    validate_profile(data, str(path))
    return data


def load_profile(name_or_path: str, facts: Mapping[str, Any] | None = None, folder: Path | None = None) -> Profile:
    """Load a built-in profile by name or a user's TOML file by path.

    A profile with an ``[auto]`` table (the built-in ``auto``) resolves to the profile its rules pick
    from ``facts`` (by default the host's, from ``edge_runner.hardware.facts.hardware_facts``).
    """
    path = _resolve_path(name_or_path, folder)
    data = read_profile_file(path)
    if "auto" in data:
        choice = select_auto(facts, rules=data["auto"]["rules"])
        picked = load_profile(choice.profile, facts, folder)
        if picked.selected_by:
            raise ConfigError(f"profile {path}: auto rule picks {choice.profile!r}, which is itself an auto profile")
        return replace(picked, selected_by=f"auto: {choice.reason}")
    head = data.get("profile", {})
    known = ("profile", "settings")
    return Profile(
        name=path.stem,
        path=path,
        settings=dict(data.get("settings", {})),
        backends={k: v for k, v in data.items() if k not in known},
        description=str(head.get("description", "")),
        backend_order=tuple(head.get("backend_order", DEFAULT_BACKEND_ORDER)),
        quantization_preset=str(head.get("quantization_preset", "cpu")),
    )


def _rule_matches(when: Mapping[str, Any], facts: Mapping[str, Any]) -> bool:
    ram_gib = float(facts.get("ram_bytes", 0)) / 2**30
    for key, want in when.items():
        if key == "arch" and str(facts.get("arch")) not in ([want] if isinstance(want, str) else want):
            return False
        if key in ("nvidia_gpu", "jetson", "npu") and bool(facts.get(key)) != want:
            return False
        if key == "max_ram_gib" and ram_gib > float(want):
            return False
        if key == "min_ram_gib" and ram_gib < float(want):
            return False
        if key == "max_cores" and int(facts.get("cores", 0)) > int(want):
            return False
    return True


def select_auto(
    facts: Mapping[str, Any] | None = None, rules: list[dict[str, Any]] | None = None, folder: Path | None = None
) -> AutoChoice:
    """Pick a profile from hardware ``facts``: the first rule of ``auto.toml`` whose ``when`` matches.

    ``facts`` default to ``edge_runner.hardware.facts.hardware_facts()`` (cheap: /proc, /sys and /dev only).
    """
    if facts is None:
        from edge_runner.hardware.facts import hardware_facts

        facts = hardware_facts()
    if rules is None:
        auto_path = profiles_dir(folder) / "auto.toml"
        if not auto_path.is_file():
            return AutoChoice("cpu", f"{auto_path} not found; using the generic CPU profile")
        rules = read_profile_file(auto_path)["auto"]["rules"]
    seen = (
        f"{facts.get('arch', '?')}, {facts.get('cores', '?')} cores, "
        f"{float(facts.get('ram_bytes', 0)) / 2**30:.1f} GiB RAM, NVIDIA GPU: {_yes(facts, 'nvidia_gpu')}, "
        f"Jetson: {_yes(facts, 'jetson')}, NPU: {_yes(facts, 'npu')}"
    )
    for index, rule in enumerate(rules):
        if _rule_matches(rule.get("when", {}), facts):
            reason = str(rule.get("reason", f"rule {index + 1} matched"))
            return AutoChoice(str(rule["profile"]), f"{reason} ({seen})", index)
    return AutoChoice("cpu", f"no auto rule matched; using the generic CPU profile ({seen})")


def _yes(facts: Mapping[str, Any], key: str) -> str:
    return "yes" if facts.get(key) else "no"


def plan_devices(profile: Profile, probes: Mapping[str, ProbeResult]) -> dict[str, tuple[SelectionStep, ...]]:
    """Dry run of each backend's device preference against what its runtime reports (nothing compiled).

    Loading may still skip a device whose compile fails; the model's metadata has the final word.
    """
    plan: dict[str, tuple[SelectionStep, ...]] = {}
    for backend in profile.backend_order:
        result = probes.get(backend)
        if result is None:
            continue
        if not result.available:
            plan[backend] = (SelectionStep(backend, False, result.reason or "runtime unavailable"),)
            continue
        options = profile.load_options(backend)
        cls = get_backend(backend)
        wanted = cls.wanted_devices(options)
        if cls.cpu_device not in wanted:
            wanted.append(cls.cpu_device)
        steps, chosen = [], False
        for device in wanted:
            reason = cls.device_unavailable(device, result.devices, options)
            use = not reason and not chosen
            steps.append(SelectionStep(device, use, reason or ("would be used" if use else "available, not needed")))
            chosen = chosen or use
        plan[backend] = tuple(steps)
    return plan

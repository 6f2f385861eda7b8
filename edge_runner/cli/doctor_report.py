"""``edge-runner doctor``: hardware, the runtimes and their devices, and the profile ``auto`` picks.

``collect()`` returns a JSON-ready dict, ``render_text()`` formats it. Hardware comes from
``edge_runner.hardware.facts``, runtimes from each backend's ``probe()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runner.backends.base import ProbeResult
from edge_runner.backends.registry import all_backend_names, probe
from edge_runner.config.profiles import load_profile, plan_devices, select_auto
from edge_runner.hardware.facts import FLAG_LABELS, accelerators, cpu_info, hardware_facts, memory_info


def _probe_json(result: ProbeResult) -> dict[str, Any]:
    return {
        "available": result.available,
        "version": result.version,
        "devices": list(result.devices),
        "reason": result.reason,
    }


def collect(
    root: Path = Path("/"),
    profile: str | None = None,
    probe_runtimes: bool = True,
    profiles_folder: Path | None = None,
) -> dict[str, Any]:
    """Everything ``doctor`` reports, as a JSON-ready dict.

    ``profile`` adds a dry run of that profile's device preferences against what the runtimes see.
    """
    report: dict[str, Any] = {"cpu": cpu_info(root), "memory": memory_info(root), "accelerators": accelerators(root)}
    names = [n for n in all_backend_names() if n != "fake"] if probe_runtimes else []
    report["runtimes"] = {name: _probe_json(probe(name)) for name in names}
    facts = hardware_facts(report)
    choice = select_auto(facts, folder=profiles_folder)
    report["auto"] = {"profile": choice.profile, "reason": choice.reason, "facts": facts}
    if profile:
        chosen = load_profile(profile, facts, profiles_folder)
        probes = {name: probe(name) for name in names}
        plan = plan_devices(chosen, probes)
        report["profile"] = {
            "name": chosen.name,
            "selected_by": chosen.selected_by,
            "backends": {b: [s.to_json() for s in steps] for b, steps in plan.items()},
        }
    return report


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.1f} GiB" if value else "none"


def render_text(report: dict[str, Any]) -> str:
    """Human-readable doctor report."""
    cpu, mem, acc = report["cpu"], report["memory"], report["accelerators"]
    flags = ", ".join(f"{FLAG_LABELS.get(k, k)} {'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    gpus = ", ".join(f"{g['name']} ({_gib(g['memory_total_bytes'])})" for g in acc["nvidia"]) or "no NVIDIA GPU"
    npus = ", ".join(f"{a['path']} ({a['driver']})" for a in acc["accel"]) or "none in /dev/accel"
    ov_npu = "NPU" in report["runtimes"].get("openvino", {}).get("devices", [])
    lines = [
        f"CPU       {cpu['model']} ({cpu['arch']}), {cpu['cores_logical']} logical cores, {cpu['cores_usable']} usable",
        f"  flags   {flags}",
        f"Memory    {_gib(mem['total_bytes'])} total, {_gib(mem['available_bytes'])} available, "
        f"cgroup limit {_gib(mem['cgroup_limit_bytes'])}",
        f"GPUs      {gpus} [{acc['nvml']}]; /dev/nvidia*: {', '.join(acc['nvidia_devices']) or 'none'}; "
        f"/dev/dri: {', '.join(acc['dri']) or 'none'}; Jetson: {'yes' if acc['jetson'] else 'no'}",
        f"NPUs      {npus}; OpenVINO NPU: {'yes' if ov_npu else 'no'}",
        "Runtimes",
    ]
    for name, rt in report["runtimes"].items():
        detail = f"{rt['version']}  {', '.join(rt['devices'])}" if rt["available"] else f"unavailable: {rt['reason']}"
        lines.append(f"  {name:<12} {detail}")
    auto = report["auto"]
    lines.append(f"Profile   auto picks {auto['profile']!r}: {auto['reason']}")
    if "profile" in report:
        plan = report["profile"]
        lines.append(f"Profile   {plan['name']!r}{' (' + plan['selected_by'] + ')' if plan['selected_by'] else ''}")
        for backend, steps in plan["backends"].items():
            shown = "; ".join(f"{s['candidate']}: {'use' if s['chosen'] else 'skip'} ({s['reason']})" for s in steps)
            lines.append(f"  {backend:<12} {shown}")
    return "\n".join(lines) + "\n"

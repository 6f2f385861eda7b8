"""Hardware facts: CPU flags, memory (cgroup limits included), NVIDIA GPUs and NPUs.

Everything is read from ``/proc``, ``/sys`` and ``/dev`` under ``root`` (tests pass a fake tree) and
NVML when its library loads. Nothing here raises for missing hardware: absence is a finding.
``edge_runner.cli.doctor_report`` adds the runtimes' probes and the profile ``auto`` picks.
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path
from typing import Any

_X86_FLAGS = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "avx512_bf16": ("avx512_bf16",),
    "vnni": ("avx512_vnni", "avx_vnni"),
    "amx": ("amx_tile", "amx_int8", "amx_bf16"),
}
_ARM_FLAGS = {"neon": ("asimd", "neon"), "dotprod": ("asimddp",), "i8mm": ("i8mm",), "sve": ("sve",)}
FLAG_LABELS = {
    "avx2": "AVX2",
    "avx512": "AVX-512",
    "avx512_bf16": "AVX512-BF16",
    "vnni": "VNNI",
    "amx": "AMX",
    "neon": "NEON",
    "dotprod": "dotprod",
    "i8mm": "I8MM",
    "sve": "SVE",
}
_UNLIMITED = 1 << 60


def _read(root: Path, rel: str) -> str:
    try:
        return (root / rel).read_text(encoding="utf-8", errors="replace").strip("\x00\n ")
    except OSError:
        return ""


def _listdir(root: Path, rel: str, prefix: str = "") -> list[str]:
    folder = root / rel
    try:
        return sorted(f"/{rel}/{p.name}" for p in folder.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def cpu_info(root: Path = Path("/")) -> dict[str, Any]:
    """CPU model, architecture, SIMD flags and core counts."""
    fields: dict[str, str] = {}
    logical = 0
    for line in _read(root, "proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        logical += key == "processor"
        fields.setdefault(key, value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    if root == Path("/"):
        arch = platform.machine()
    else:
        arch = "x86_64" if "flags" in fields else "aarch64" if "asimd" in flags else "unknown"
    model = (
        fields.get("model name")
        or fields.get("Model")
        or fields.get("Hardware")
        or _read(root, "proc/device-tree/model")
        or platform.processor()
        or "unknown"
    )
    found = {name: any(f in flags for f in names) for name, names in {**_X86_FLAGS, **_ARM_FLAGS}.items()}
    usable = len(os.sched_getaffinity(0)) if root == Path("/") else logical
    quota = cpu_quota_cores(root)
    if quota is not None:
        usable = max(1, min(usable or 1 << 16, quota))
    return {
        "model": model,
        "arch": arch,
        "flags": found,
        "cores_logical": logical or os.cpu_count() or 1,
        "cores_usable": usable or logical or 1,
    }


def cpu_quota_cores(root: Path = Path("/")) -> int | None:
    """Cores the cgroup CPU quota allows (a pod's CPU limit), rounded up; None without a quota."""
    quota = _read(root, "sys/fs/cgroup/cpu.max").split()
    if len(quota) == 2 and quota[0] != "max" and quota[0].isdigit() and quota[1].isdigit() and int(quota[1]):
        return max(1, int(int(quota[0]) / int(quota[1]) + 0.999))
    return None


def memory_info(root: Path = Path("/")) -> dict[str, Any]:
    """RAM from /proc/meminfo and the cgroup limit (psutil reports the host's RAM inside containers)."""
    values = {}
    for line in _read(root, "proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    limit = None
    for rel in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        text = _read(root, rel)
        if text.isdigit() and int(text) < _UNLIMITED:
            limit = int(text)
            break
    total = values.get("MemTotal", 0)
    effective = min(total, limit) if limit and total else (limit or total)
    return {
        "total_bytes": total,
        "available_bytes": values.get("MemAvailable", 0),
        "cgroup_limit_bytes": limit,
        "effective_bytes": effective,
    }


def nvml_gpus() -> tuple[list[dict[str, Any]], str]:
    """NVIDIA GPUs through NVML (pynvml when installed, else libnvidia-ml by ctypes) and a status line."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return _nvml_ctypes()
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml raises NVMLError subclasses
        return [], f"NVML unavailable: {exc}"
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                }
            )
        return gpus, "NVML (pynvml)"
    finally:
        pynvml.nvmlShutdown()


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _nvml_ctypes() -> tuple[list[dict[str, Any]], str]:
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return [], "NVML unavailable: libnvidia-ml.so.1 not found (no NVIDIA driver)"
    if lib.nvmlInit_v2() != 0:
        return [], "NVML unavailable: nvmlInit failed"
    try:
        count = ctypes.c_uint(0)
        lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
        gpus = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            lib.nvmlDeviceGetName(handle, name, 96)
            memory = _NvmlMemory()
            lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory))
            gpus.append(
                {"index": i, "name": name.value.decode(errors="replace"), "memory_total_bytes": int(memory.total)}
            )
        return gpus, "NVML (libnvidia-ml)"
    finally:
        lib.nvmlShutdown()


def _is_jetson(root: Path) -> bool:
    return (root / "etc/nv_tegra_release").is_file() or "jetson" in _read(root, "proc/device-tree/model").lower()


def accelerators(root: Path = Path("/"), use_nvml: bool = True) -> dict[str, Any]:
    """GPUs and NPUs: NVML, /dev/nvidia*, /dev/dri, Jetson markers, /dev/accel with their drivers."""
    nvidia, status = nvml_gpus() if use_nvml and root == Path("/") else ([], "NVML not queried")
    accel = []
    for dev in _listdir(root, "dev/accel", "accel"):
        driver = root / "sys/class/accel" / Path(dev).name / "device/driver"
        accel.append({"path": dev, "driver": driver.resolve().name if driver.exists() else "unknown"})
    return {
        "nvidia": nvidia,
        "nvml": status,
        "nvidia_devices": _listdir(root, "dev", "nvidia"),
        "dri": _listdir(root, "dev/dri"),
        "jetson": _is_jetson(root),
        "accel": accel,
    }


def hardware_facts(report: dict[str, Any] | None = None, root: Path = Path("/")) -> dict[str, Any]:
    """The facts ``auto`` rules match on; cheap when no ``report`` is given (no NVML, no runtimes)."""
    cpu = report["cpu"] if report else cpu_info(root)
    memory = report["memory"] if report else memory_info(root)
    acc = report["accelerators"] if report else accelerators(root, use_nvml=False)
    npu_runtime = report is not None and "NPU" in report["runtimes"].get("openvino", {}).get("devices", [])
    nvidia_nodes = [d for d in acc["nvidia_devices"] if d.removeprefix("/dev/nvidia").isdigit()]
    return {
        "arch": cpu["arch"],
        "cores": cpu["cores_usable"],
        "ram_bytes": memory["effective_bytes"],
        "nvidia_gpu": bool(acc["nvidia"] or nvidia_nodes),
        "jetson": acc["jetson"],
        "npu": bool(acc["accel"]) or npu_runtime,
    }

"""``doctor``: hardware read from a (fake) /proc,/sys,/dev tree, runtimes probed, and profile fallback.

On this CPU-only machine the intel-npu and cuda profiles must fall back to CPU and say why, both in
the doctor's dry run and in the loaded model's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runner.backends.registry import get_backend, probe
from edge_runner.cli import doctor_report as doctor
from edge_runner.config.profiles import load_profile
from edge_runner.core.manifest import read_manifest
from edge_runner.core.paths import DEFAULTS_DIR

X86 = "processor\t: 0\nmodel name\t: Intel(R) Core(TM) Ultra 7 155H\nflags\t\t: fpu avx2 avx_vnni\nprocessor\t: 1\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nprocessor\t: 1\nprocessor\t: 2\nprocessor\t: 3\n"


def fake_root(tmp_path: Path, cpuinfo: str, mem_kib: int = 16 * 2**20, extra: tuple[str, ...] = ()) -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    (tmp_path / "proc/meminfo").write_text(f"MemTotal: {mem_kib} kB\nMemAvailable: {mem_kib // 2} kB\n")
    for rel in extra:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    return tmp_path


def test_intel_npu_laptop_picks_intel_npu(tmp_path: Path) -> None:
    root = fake_root(tmp_path, X86, extra=("dev/accel/accel0",))
    report = doctor.collect(root=root, probe_runtimes=False)
    assert report["cpu"]["flags"]["avx2"] and report["cpu"]["flags"]["vnni"] and not report["cpu"]["flags"]["amx"]
    assert report["cpu"]["model"].startswith("Intel") and report["cpu"]["cores_logical"] == 2
    assert report["accelerators"]["accel"][0]["path"] == "/dev/accel/accel0"
    assert report["auto"]["profile"] == "intel-npu" and "NPU" in report["auto"]["reason"]


def test_jetson_board_picks_jetson(tmp_path: Path) -> None:
    root = fake_root(tmp_path, ARM, 8 * 2**20, extra=("etc/nv_tegra_release", "dev/nvidia0"))
    report = doctor.collect(root=root, probe_runtimes=False)
    cpu = report["cpu"]
    assert cpu["arch"] == "aarch64" and cpu["flags"]["neon"] and cpu["flags"]["dotprod"] and cpu["flags"]["i8mm"]
    assert report["accelerators"]["jetson"] and report["auto"]["profile"] == "jetson"


def test_cgroup_limits_shrink_memory_and_cores(tmp_path: Path) -> None:
    root = fake_root(tmp_path, ARM, 8 * 2**20)
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/memory.max").write_text(f"{1 * 2**30}\n")
    (root / "sys/fs/cgroup/cpu.max").write_text("200000 100000\n")
    report = doctor.collect(root=root, probe_runtimes=False)
    assert report["memory"]["effective_bytes"] == 2**30 and report["cpu"]["cores_usable"] == 2
    assert report["auto"]["profile"] == "cpu-lowmem"


def test_this_machine_report_is_json_and_readable() -> None:
    report = doctor.collect(profile="intel-npu")
    json.dumps(report)
    for name in ("onnxruntime", "openvino", "tflite"):
        assert name in report["runtimes"]
    text = doctor.render_text(report)
    assert "auto picks" in text and "Runtimes" in text and "AVX-512" in text


def _plan(profile: str) -> dict[str, list[dict[str, object]]]:
    plan: dict[str, list[dict[str, object]]] = doctor.collect(profile=profile)["profile"]["backends"]
    return plan


def test_doctor_shows_intel_npu_falling_back_to_cpu() -> None:
    if not probe("openvino").available or "NPU" in probe("openvino").devices:
        pytest.skip("needs OpenVINO without an NPU")
    steps = _plan("intel-npu")["openvino"]
    assert [s["candidate"] for s in steps] == ["NPU", "GPU", "CPU"]
    assert not steps[0]["chosen"] and "not in Core().available_devices" in str(steps[0]["reason"])
    assert steps[-1]["chosen"]


def test_doctor_shows_cuda_falling_back_to_cpu() -> None:
    if "CUDAExecutionProvider" in probe("onnxruntime").devices:
        pytest.skip("this machine has CUDA")
    steps = _plan("cuda")["onnxruntime"]
    assert [s["chosen"] for s in steps] == [False, False, True]
    assert "get_available_providers" in str(steps[1]["reason"])


@pytest.mark.parametrize(
    ("profile", "expected_backend", "skipped"),
    [
        ("intel-npu", "openvino", ["NPU", "GPU"]),
        ("cuda", "onnxruntime", ["TensorrtExecutionProvider", "CUDAExecutionProvider"]),
    ],
)
def test_loading_digits_under_accelerator_profiles_falls_back_to_cpu(
    profile: str, expected_backend: str, skipped: list[str], tmp_path: Path
) -> None:
    chosen = load_profile(profile)
    name, _ = chosen.choose_backend("onnx")
    if name != expected_backend:
        pytest.skip(f"{expected_backend} unavailable")
    folder = DEFAULTS_DIR / "digits" / "1"
    backend = get_backend(name)(read_manifest(folder), folder, chosen.load_options(name, 1, tmp_path / "cache"))
    backend.load()
    meta = backend.metadata()
    steps = {s.candidate: s for s in meta.selection}
    if any(s in probe(name).devices for s in skipped):
        pytest.skip("this machine has the accelerator")
    assert meta.device in ("CPU", "CPUExecutionProvider")
    for candidate in skipped:
        assert not steps[candidate].chosen and steps[candidate].reason
    assert backend.infer({"input": np.zeros((2, 1, 8, 8), np.float32)})["logits"].shape == (2, 10)
    backend.unload()

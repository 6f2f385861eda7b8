"""Profiles: every built-in file validates, the schema is strict, and ``auto`` follows the hardware."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_runner.config.profiles import list_profiles, load_profile, profiles_dir, select_auto
from edge_runner.config.settings import SETTING_NAMES, load_config
from edge_runner.core.errors import BackendUnavailable, ConfigError

REQUIRED = {"cpu", "cpu-lowmem", "cuda", "jetson", "intel-npu", "arm64", "auto"}
CONCRETE = sorted(REQUIRED - {"auto"})
GIB = 2**30


def facts(**overrides: Any) -> dict[str, Any]:
    base = {"arch": "x86_64", "cores": 8, "ram_bytes": 16 * GIB, "nvidia_gpu": False, "jetson": False, "npu": False}
    return {**base, **overrides}


def test_required_profiles_ship() -> None:
    assert set(list_profiles()) >= REQUIRED
    assert (profiles_dir() / "cpu.toml").is_file()


@pytest.mark.parametrize("name", CONCRETE)
def test_builtin_profile_settings_pass_the_config_layer(name: str) -> None:
    profile = load_profile(name)
    assert profile.description and profile.backend_order
    assert set(profile.settings) <= set(SETTING_NAMES)
    resolved = load_config({}, {}, profile_settings=profile.settings, profile_name=name)
    assert resolved.sources["max_batch_size"] == f"profile:{name}"


@pytest.mark.parametrize("name", CONCRETE)
def test_builtin_quantization_preset_exists_in_converters(name: str) -> None:
    presets = pytest.importorskip("converters.presets")
    assert load_profile(name).quantization_preset in presets.PRESETS


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[settings]\nmax_batch = 4\n", "settings.max_batch"),
        ("[settings]\nmax_batch_size = 'four'\n", "settings.max_batch_size: bad value for 'max_batch_size'"),
        ("[settings]\nmax_batch_size = 0\n", "must be at least 1"),
        ("[settings]\ndynamic_batching = 'maybe'\n", "settings.dynamic_batching"),
        ("[gpu]\ndevices = ['CUDA']\n", "unknown table [gpu]"),
        ("[openvino]\ndevices = 'NPU'\n", "openvino.devices: expected a list of strings"),
        ("[openvino]\nperformance_hint = 'fast'\n", "openvino.performance_hint"),
        ("[openvino]\nstatic_batch_sizes = [0]\n", "openvino.static_batch_sizes"),
        ("[tflite.delegates.tpu]\noptions = {}\n", "missing required key 'library'"),
        ("[onnxruntime.provider_options.CUDAExecutionProvider]\ndevice_id = [0]\n", "onnxruntime.provider_options"),
        ("[profile]\nbackend_order = ['tensorrt']\n", "unknown backend 'tensorrt'"),
        ("[[auto.rules]]\nprofile = 'cpu'\nwhen = { gpu = true }\n", "unknown key 'gpu'"),
        ("[settings\n", "profile"),
    ],
)
def test_schema_errors_name_the_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    assert str(path) in info.value.message and needle in info.value.message


def test_user_profile_by_path(tmp_path: Path) -> None:
    path = tmp_path / "edge-box.toml"
    path.write_text("[profile]\nbackend_order = ['openvino']\n[settings]\nthreads = 3\n[openvino]\ndevices = ['GPU']\n")
    profile = load_profile(str(path))
    assert profile.name == "edge-box" and profile.settings == {"threads": 3}
    assert profile.load_options("openvino").devices == ("GPU",)


def test_unknown_names_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profiles: arm64, auto, cpu"):
        load_profile("no-such-profile")
    with pytest.raises(ConfigError, match="not found"):
        load_profile(str(tmp_path / "missing.toml"))


def test_load_options_carry_devices_options_and_defaults() -> None:
    npu = load_profile("intel-npu")
    options = npu.load_options("openvino", threads=0, cache_dir=Path("/tmp/c"))
    assert options.devices == ("NPU", "GPU", "CPU") and options.cache_dir == Path("/tmp/c")
    assert options.options["static_batch_sizes"] == [1, 4] and "devices" not in options.options
    lowmem = load_profile("cpu-lowmem")
    assert lowmem.load_options("onnxruntime").threads == 2
    assert lowmem.load_options("onnxruntime", threads=1).threads == 1
    cpu = load_profile("cpu")
    assert cpu.load_options("openvino").options["static_batch_sizes"] == [1, 4, 8]
    cuda = load_profile("cuda")
    ort = cuda.load_options("onnxruntime")
    assert ort.devices[0] == "TensorrtExecutionProvider"
    assert ort.options["provider_options"]["CUDAExecutionProvider"]["device_id"] == 0


def test_backend_order_decides_who_serves_onnx() -> None:
    assert load_profile("intel-npu").backends_for("onnx")[:2] == ("openvino", "onnxruntime")
    assert load_profile("cpu").backends_for("onnx")[:2] == ("onnxruntime", "openvino")
    assert load_profile("cpu").backends_for("tflite") == ("tflite",)
    name, steps = load_profile("intel-npu").choose_backend("onnx")
    assert name == "openvino" and steps[-1].chosen
    assert load_profile("intel-npu").choose_backend("onnx", pinned="onnxruntime")[0] == "onnxruntime"


def test_choose_backend_explains_when_nothing_can_serve() -> None:
    with pytest.raises(BackendUnavailable, match="no backend can serve format 'nope'"):
        load_profile("cpu").choose_backend("nope")


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (facts(arch="aarch64", jetson=True, nvidia_gpu=True), "jetson"),
        (facts(nvidia_gpu=True), "cuda"),
        (facts(npu=True), "intel-npu"),
        (facts(ram_bytes=1 * GIB), "cpu-lowmem"),
        (facts(arch="aarch64", cores=4, ram_bytes=4 * GIB), "cpu-lowmem"),
        (facts(arch="aarch64", cores=8, ram_bytes=8 * GIB), "arm64"),
        (facts(), "cpu"),
    ],
)
def test_auto_picks_from_hardware_facts(found: dict[str, Any], expected: str) -> None:
    choice = select_auto(found)
    assert choice.profile == expected and choice.reason
    profile = load_profile("auto", facts=found)
    assert profile.name == expected and profile.selected_by.startswith("auto: ")


def test_auto_on_this_machine_without_accelerators_is_cpu() -> None:
    from edge_runner.hardware.facts import hardware_facts

    here = hardware_facts()
    if here["nvidia_gpu"] or here["npu"] or here["arch"] != "x86_64" or here["ram_bytes"] <= 2 * GIB:
        pytest.skip("this machine has hardware the test does not expect")
    assert load_profile("auto").name == "cpu"


def test_profile_settings_are_checked_by_the_settings_table(tmp_path: Path) -> None:
    """One validation for every layer: a profile's [settings] go through the same converters as env and CLI."""
    path = tmp_path / "p.toml"
    path.write_text("[settings]\nport = 70000\nmemory_budget = '512MB'\n")
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    assert "settings.port" in info.value.message and "must be between 0 and 65535" in info.value.message
    path.write_text("[settings]\nmemory_budget = '512MB'\n")
    assert load_profile(str(path)).settings == {"memory_budget": "512MB"}

"""Config layering: defaults < profile < config file < env < CLI, strict about keys and values."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_runner.config.settings import describe, load_config, to_bytes, to_duration_s
from edge_runner.core.errors import ConfigError


@pytest.mark.parametrize(
    ("profile", "file_text", "env", "cli", "expected", "source"),
    [
        ({}, "", {}, {}, 8, "default"),
        ({"max_batch_size": 4}, "", {}, {}, 4, "profile:test"),
        ({"max_batch_size": 4}, "max_batch_size = 16\n", {}, {}, 16, "FILE"),
        (
            {"max_batch_size": 4},
            "max_batch_size = 16\n",
            {"EDGE_RUNNER_MAX_BATCH_SIZE": "24"},
            {},
            24,
            "env EDGE_RUNNER_MAX_BATCH_SIZE",
        ),
        ({}, "", {"MAX_BATCH_SIZE": "12"}, {}, 12, "env MAX_BATCH_SIZE"),
        ({}, "max_batch_size = 16\n", {"MAX_BATCH_SIZE": "12"}, {"max_batch_size": "32"}, 32, "cli"),
    ],
)
def test_each_layer_overrides_the_one_below(
    tmp_path: Path,
    profile: dict[str, int],
    file_text: str,
    env: dict[str, str],
    cli: dict[str, str],
    expected: int,
    source: str,
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(file_text)
    resolved = load_config(cli, env, config if file_text else None, profile, "test")
    assert resolved.settings.max_batch_size == expected
    assert resolved.sources["max_batch_size"] == (str(config) if source == "FILE" else source)


def test_seed_env_names_are_honoured() -> None:
    env = {"DYNAMIC_BATCHING": "false", "QUANTIZATION": "int8", "MAX_CONCURRENT_REQUESTS": "3"}
    s = load_config({}, env).settings
    assert (s.dynamic_batching, s.quantization, s.max_concurrent_requests) == (False, "int8", 3)


def test_edge_runner_env_wins_over_seed_alias() -> None:
    s = load_config({}, {"EDGE_RUNNER_MAX_BATCH_SIZE": "5", "MAX_BATCH_SIZE": "9"}).settings
    assert s.max_batch_size == 5


@pytest.mark.parametrize(
    ("cli", "env", "file_text", "message"),
    [
        ({}, {}, "max_batch = 3\n", "unknown setting 'max_batch' in"),
        ({}, {"EDGE_RUNNER_MAX_BATCH": "3"}, "", "unknown environment variable EDGE_RUNNER_MAX_BATCH"),
        ({"max_batch_size": "many"}, {}, "", "bad value for 'max_batch_size' in --max-batch-size"),
        ({}, {"DYNAMIC_BATCHING": "perhaps"}, "", "bad value for 'dynamic_batching' in env DYNAMIC_BATCHING"),
        ({}, {}, 'memory_budget = "lots"\n', "bad value for 'memory_budget'"),
    ],
)
def test_bad_keys_and_values_name_key_and_source(
    tmp_path: Path, cli: dict[str, str], env: dict[str, str], file_text: str, message: str
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(file_text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(cli, env, config if file_text else None)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config({}, {}, tmp_path / "nope.toml")


def test_describe_masks_secrets_and_lists_env_names() -> None:
    rows = {r["name"]: r for r in describe(load_config({"api_key": "s3cret"}, {}))}
    assert rows["api_key"]["value"] == "***"
    assert "MAX_BATCH_SIZE" in rows["max_batch_size"]["env"]
    assert rows["port"]["source"] == "default"


@pytest.mark.parametrize(("text", "value"), [("512MB", 512 * 10**6), ("2GiB", 2 * 2**30), ("1000", 1000), ("auto", -1)])
def test_sizes(text: str, value: int) -> None:
    assert to_bytes(text) == value


@pytest.mark.parametrize(("text", "value"), [("5m", 300.0), ("250ms", 0.25), ("-1", -1.0), ("0", 0.0)])
def test_durations(text: str, value: float) -> None:
    assert to_duration_s(text) == value


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("port", "-5", "must be between 0 and 65535"),
        ("port", "70000", "must be between 0 and 65535"),
        ("max_batch_size", "0", "must be at least 1"),
        ("request_timeout_ms", "0", "must be at least 1"),
        ("max_queue_size", "-1", "must be at least 1"),
        ("max_queue_delay_ms", "nan", "finite number >= 0"),
        ("graph_optimization_level", "fast", "expected one of disable, basic, extended, all"),
        ("version_policy", "latest:0", "expected latest, latest:N"),
        ("version_policy", "latest:x", "expected latest, latest:N"),
        ("log_level", "loud", "expected one of debug"),
        ("keep_alive", "nan", "expected a duration"),
    ],
)
def test_out_of_range_values_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"bad value for '{key}' in --{key.replace('_', '-')}: .*{message}"):
        load_config({key: value}, {})


def test_xdg_folders_are_resolved_from_the_same_environment(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    settings = load_config({}, env).settings
    assert settings.repository_root() == tmp_path / "data" / "edge-runner" / "models"
    assert settings.cache_root() == tmp_path / "cache" / "edge-runner"
    # relative XDG values are ignored, as the XDG spec says
    relative = load_config({}, {"XDG_DATA_HOME": "rel", "HOME": str(tmp_path)}).settings
    assert relative.repository_root() == tmp_path / ".local" / "share" / "edge-runner" / "models"


def test_every_verb_reads_the_settings_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`models` honours the config file (it used to read only its flag and env); client verbs get url and key."""
    from edge_runner.cli.main import build_parser, main, resolve_settings
    from edge_runner.core.paths import DEFAULTS_DIR

    for name in [k for k in os.environ if k.startswith("EDGE_RUNNER_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "edge.toml"
    config.write_text(f'model_repository = "{tmp_path / "from-file"}"\n')
    assert main(["models", "--config", str(config), "add", str(DEFAULTS_DIR / "digits" / "1"), "--name", "d"]) == 0
    assert (tmp_path / "from-file" / "d" / "1" / "manifest.json").is_file()
    monkeypatch.setenv("EDGE_RUNNER_CONFIG", str(config))
    capsys.readouterr()
    assert main(["models", "--json", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"name": "d", "versions": [1], "source": "repository"} in listed
    args = build_parser().parse_args(["ps"])
    env = {"EDGE_RUNNER_URL": "http://10.0.0.5:9000", "EDGE_RUNNER_API_KEY": "k"}
    resolved, _ = resolve_settings(args, env)
    assert resolved.settings.url == "http://10.0.0.5:9000" and resolved.settings.api_key == "k"
    resolved, _ = resolve_settings(build_parser().parse_args(["ps", "--url", "http://h:1"]), env)
    assert resolved.settings.url == "http://h:1" and resolved.sources["url"] == "cli"  # the flag is the CLI layer

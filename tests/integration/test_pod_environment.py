"""The server starts with exactly the environment a pod of deploy/kubernetes/deployment.yaml gets.

That is the ConfigMap's variables plus what the kubelet injects: service links for every Service in the
namespace (ours is named edge-runner, so EDGE_RUNNER_PORT=tcp://... and friends) and KUBERNETES_*. They used
to stop the server with exit 2 (``bad value for 'port' in env EDGE_RUNNER_PORT``).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.conftest import ROOT, ServerProcess, free_env

CLUSTER_IP = "10.43.27.5"


def _service_links(name: str, port: int) -> dict[str, str]:
    """What the kubelet injects for a Service ``name`` with one TCP port called ``http`` (docker-links style)."""
    prefix = name.upper().replace("-", "_")
    url = f"tcp://{CLUSTER_IP}:{port}"
    return {
        f"{prefix}_SERVICE_HOST": CLUSTER_IP,
        f"{prefix}_SERVICE_PORT": str(port),
        f"{prefix}_SERVICE_PORT_HTTP": str(port),
        f"{prefix}_PORT": url,
        f"{prefix}_PORT_{port}_TCP": url,
        f"{prefix}_PORT_{port}_TCP_PROTO": "tcp",
        f"{prefix}_PORT_{port}_TCP_PORT": str(port),
        f"{prefix}_PORT_{port}_TCP_ADDR": CLUSTER_IP,
        "KUBERNETES_SERVICE_HOST": "10.43.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_PORT": "tcp://10.43.0.1:443",
    }


def test_server_starts_with_the_pods_environment(tmp_path: Path, start_server: Callable[..., ServerProcess]) -> None:
    configmap = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())["data"]
    service = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "service.yaml").read_text())
    (port,) = service["spec"]["ports"]
    env = free_env(tmp_path)
    env.update({k: str(v) for k, v in configmap.items()})
    # the pod's volumes, here: the repository and cache folders of this test
    env["EDGE_RUNNER_MODEL_REPOSITORY"] = str(tmp_path / "models")
    env["EDGE_RUNNER_CACHE_DIR"] = str(tmp_path / "cache")
    # Without the ConfigMap's EDGE_RUNNER_PORT the service link is what the variable holds (the harder case).
    env.pop("EDGE_RUNNER_PORT")
    env.update(_service_links(service["metadata"]["name"], port["port"]))
    server = start_server("--host", "127.0.0.1", "--models", "digits", env=env)
    with urllib.request.urlopen(server.url + "/v2/models/digits/ready", timeout=10) as resp:
        assert json.loads(resp.read())["ready"] is True
    server.stop()
    log = server.log_path.read_text()
    assert "ignoring 8 Kubernetes service-link variables" in log and "EDGE_RUNNER_PORT_8000_TCP_ADDR" in log


def test_a_misspelt_setting_still_stops_the_server(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = free_env(tmp_path)
    env.update(_service_links("edge-runner", 8000))
    env["EDGE_RUNNER_MAX_BATCH"] = "4"
    result = subprocess.run(
        [sys.executable, "-m", "edge_runner", "config", "--show"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "unknown environment variable EDGE_RUNNER_MAX_BATCH" in result.stderr
    env.pop("EDGE_RUNNER_MAX_BATCH")
    env["EDGE_RUNNER_PORT"] = "eighty"  # not a service link: still a bad value
    result = subprocess.run(
        [sys.executable, "-m", "edge_runner", "config", "--show"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "bad value for 'port' in env EDGE_RUNNER_PORT" in result.stderr

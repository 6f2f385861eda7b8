"""OCI distribution against a real registry on loopback (Debian's docker-registry, the reference distribution):
push -> pull round trip with digests checked and the pulled model served, a tampered layer refused, docker-config
auth against an htpasswd registry, and ``models package`` as an OCI image layout."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runner.core.paths import DEFAULTS_DIR
from tests.conftest import ServerProcess, free_env

REGISTRY_BIN = shutil.which("docker-registry")
DIGITS = DEFAULTS_DIR / "digits" / "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        REGISTRY_BIN is None,
        reason="docker-registry is not installed (apt-get install docker-registry; .ci/run installs it)",
    ),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Registry:
    """A ``docker-registry serve`` process storing into ``storage``, on a free loopback port."""

    def __init__(self, tmp: Path, htpasswd: Path | None = None) -> None:
        self.storage = tmp / "registry-storage"
        self.port = _free_port()
        auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else ""
        config = tmp / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}"
        )
        self.log = (tmp / "registry.log").open("w")
        command = [str(REGISTRY_BIN), "serve", str(config)]
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.host = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (tmp / "registry.log").read_text()
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # 401 from an htpasswd registry: it is up
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not start in 30 s")

    def blob(self, digest: str) -> Path:
        """Where the registry stores a blob (distribution's filesystem driver layout)."""
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    started = Registry(tmp_path)
    yield started
    started.stop()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runner", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _env(tmp: Path, repo: str) -> dict[str, str]:
    env = free_env(tmp)
    env["EDGE_RUNNER_MODEL_REPOSITORY"] = str(tmp / repo)
    env["DOCKER_CONFIG"] = str(tmp / "no-docker-config")  # never the developer's own credentials
    return env


def _infer(url: str, model: str, x: np.ndarray) -> dict[str, list[float]]:
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body), timeout=60) as r:
        return {out["name"]: out["data"] for out in json.loads(r.read())["outputs"]}


def _model_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def test_push_pull_round_trip_serves_the_same_model(
    tmp_path: Path, registry: Registry, start_server: Callable[..., ServerProcess]
) -> None:
    ref = f"{registry.host}/models/digits:1"
    pushed = cli(_env(tmp_path, "source-repo"), "models", "--json", "push", "digits:1", ref)
    assert pushed.returncode == 0, pushed.stderr
    digest = json.loads(pushed.stdout)["digest"]
    assert digest.startswith("sha256:")

    env = _env(tmp_path, "repo")  # a fresh repository, the one the server below reads
    pulled = cli(env, "models", "--json", "pull", ref, "--name", "copy")
    assert pulled.returncode == 0, pulled.stderr
    stored = json.loads(pulled.stdout)
    assert (stored["name"], stored["version"]) == ("copy", 1)
    assert stored["source"]["oci"]["ref"] == ref and stored["source"]["oci"]["digest"] == digest
    assert abs(stored["source"]["oci"]["pulled_at"] - time.time()) < 120
    original = json.loads((DIGITS / "manifest.json").read_text())
    assert stored["parity"] == original["parity"]  # the parity report travels in the config blob
    folder = tmp_path / "repo" / "copy" / "1"
    for entry in original["files"]:
        assert _sha256(folder / entry["path"]) == _sha256(DIGITS / entry["path"])
    assert _model_folders(tmp_path / "repo") == ["copy"]
    assert not list((tmp_path / "repo" / ".oci-blobs").rglob("*.*")), "download cache not emptied"

    server = start_server("--models", "copy,digits", env=env)
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    assert _infer(server.url, "copy", x) == _infer(server.url, "digits", x)


def test_a_tampered_layer_is_refused_and_nothing_is_imported(tmp_path: Path, registry: Registry) -> None:
    ref = f"{registry.host}/models/digits:1"
    assert cli(_env(tmp_path, "source-repo"), "models", "push", "digits", ref).returncode == 0
    model_file = registry.blob("sha256:" + _sha256(DIGITS / "model.onnx"))
    data = bytearray(model_file.read_bytes())
    data[100:104] = b"EVIL"  # same size, other bytes: only the digest can tell
    model_file.write_bytes(bytes(data))

    env = _env(tmp_path, "repo")
    pulled = cli(env, "models", "pull", ref, "--name", "evil")
    assert pulled.returncode == 1, pulled.stdout
    assert "tampered" in pulled.stderr and "nothing was imported" in pulled.stderr, pulled.stderr
    assert "Traceback" not in pulled.stderr
    assert _model_folders(tmp_path / "repo") == []
    assert not list((tmp_path / "repo").glob(".tmp-*"))
    listed = json.loads(cli(env, "models", "--json", "list").stdout)
    assert "evil" not in {m["name"] for m in listed}


def test_credentials_come_from_the_docker_config(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt", reason="the crypt module makes the bcrypt htpasswd entry")
        hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH))
    if not hashed or not hashed.startswith("$2"):
        pytest.skip("this libcrypt cannot make bcrypt hashes for htpasswd")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{hashed}\n")
    registry = Registry(tmp_path, htpasswd)
    try:
        ref = f"{registry.host}/private/digits:1"
        env = _env(tmp_path, "repo")
        refused = cli(env, "models", "push", "digits", ref)
        assert refused.returncode == 1 and "credentials" in refused.stderr, refused.stderr
        config = tmp_path / "docker" / "config.json"
        config.parent.mkdir()
        token = base64.b64encode(b"alice:s3cret").decode()
        config.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
        env["DOCKER_CONFIG"] = str(config.parent)
        pushed = cli(env, "models", "push", "digits", ref)
        assert pushed.returncode == 0, pushed.stderr
        pulled = cli(env, "models", "pull", ref, "--name", "private")
        assert pulled.returncode == 0, pulled.stderr
        assert _model_folders(tmp_path / "repo") == ["private"]
    finally:
        registry.stop()


def test_package_writes_an_oci_layout_that_pulls_back(tmp_path: Path) -> None:
    env = _env(tmp_path, "repo")
    out = tmp_path / "digits-oci"
    packaged = cli(env, "models", "--json", "package", "digits", "--out", str(out))
    assert packaged.returncode == 0, packaged.stderr
    digest = json.loads(packaged.stdout)["digest"]
    oras_layout = pytest.importorskip("oras.layout")
    oras_layout.Layout(str(out)).validate()  # the layout checks of the OCI client library
    index = json.loads((out / "index.json").read_text())
    assert {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]} == {"1", "latest"}
    manifest = json.loads((out / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes())
    assert manifest["config"]["mediaType"] == "application/vnd.edge-runner.model.config.v1+json"
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]] == ["model.onnx"]
    again = cli(env, "models", "package", "digits", "--out", str(out))
    assert again.returncode == 1 and "already exists" in again.stderr

    pulled = cli(env, "models", "pull", str(out), "--name", "from-layout")
    assert pulled.returncode == 0, pulled.stderr
    assert _sha256(tmp_path / "repo" / "from-layout" / "1" / "model.onnx") == _sha256(DIGITS / "model.onnx")


def test_ollama_pull_fetches_only_from_allowed_registries(
    tmp_path: Path, registry: Registry, start_server: Callable[..., ServerProcess]
) -> None:
    """The official ollama client's pull() of an OCI reference: imported, verified and served under the model's
    own name; a registry not in pull_registries is refused before any fetch (no server-side request forgery)."""
    ollama = pytest.importorskip("ollama")
    source = _env(tmp_path, "source-repo")
    assert cli(source, "models", "pull", f"{registry.host}/none:0", "--name", "x").returncode != 0  # empty registry
    added = cli(source, "models", "add", str(DIGITS), "--name", "mnist-like")
    assert added.returncode == 0, added.stderr
    ref = f"{registry.host}/models/mnist-like:1"
    assert cli(source, "models", "push", "mnist-like:1", ref).returncode == 0

    env = _env(tmp_path, "repo")
    refused = start_server(env=env)
    with pytest.raises(ollama.ResponseError) as forbidden:
        ollama.Client(host=refused.url).pull(ref)
    assert forbidden.value.status_code == 403 and "pull_registries" in forbidden.value.error
    assert _model_folders(tmp_path / "repo") == []
    refused.stop()

    server = start_server(env={**env, "EDGE_RUNNER_PULL_REGISTRIES": registry.host})
    client = ollama.Client(host=server.url)
    statuses = [part.status for part in client.pull(ref, stream=True)]
    assert statuses[-1] == "success" and _model_folders(tmp_path / "repo") == ["mnist-like"]
    assert "mnist-like:latest" in {m.model for m in client.list().models}
    urllib.request.urlopen(
        urllib.request.Request(f"{server.url}/v2/repository/models/mnist-like/load", data=b"{}"), timeout=60
    ).close()
    x = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
    assert _infer(server.url, "mnist-like", x) == _infer(server.url, "digits", x)
    with pytest.raises(ollama.ResponseError) as missing:
        client.pull(f"{registry.host}/models/absent:1")
    assert missing.value.status_code == 502


def _chat(url: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_pulled_model_answers_to_the_reference_it_was_pulled_by(
    tmp_path: Path, registry: Registry, start_server: Callable[..., ServerProcess]
) -> None:
    """Docker Model Runner and Ollama users address a model by the reference they pulled: after
    ``models pull REF --name first``, ``REF`` is ``first:1``; after ``/api/pull REF`` (its own name, ``chatty``)
    the same ``REF`` is the newer pull. Ollama's chat and Anthropic's messages resolve it the same way."""
    ollama = pytest.importorskip("ollama")
    pytest.importorskip("llama_cpp")
    source = _env(tmp_path, "source-repo")
    assert cli(source, "models", "add", str(DEFAULTS_DIR / "tiny-llm" / "1"), "--name", "chatty").returncode == 0
    ref = f"{registry.host}/library/chatty:1"
    pushed = cli(source, "models", "push", "chatty:1", ref)
    assert pushed.returncode == 0, pushed.stderr
    untagged = f"{registry.host}/library/chatty"  # OCI's default tag: latest
    assert cli(source, "models", "push", "chatty:1", untagged + ":latest").returncode == 0

    env = _env(tmp_path, "repo")
    pulled = cli(env, "models", "--json", "pull", ref, "--name", "first")
    assert pulled.returncode == 0, pulled.stderr
    assert cli(env, "models", "pull", untagged, "--name", "second").returncode == 0
    server = start_server("--threads", "2", env={**env, "EDGE_RUNNER_PULL_REGISTRIES": registry.host})
    client = ollama.Client(host=server.url, timeout=120)
    greedy = {"temperature": 0, "num_predict": 12}
    asked = [{"role": "user", "content": "What is assert?"}]
    by_ref = client.chat(model=ref, messages=asked, options=greedy)
    assert by_ref.model == ref and by_ref.message.content  # echoed as sent, as Ollama does
    assert by_ref.message.content == client.chat(model="first", messages=asked, options=greedy).message.content
    loaded = {m.model for m in client.ps().models}
    assert "first:1" in loaded and "chatty:1" not in loaded
    streamed = list(client.chat(model=untagged, messages=asked, options=greedy, stream=True))
    assert "".join(p.message.content or "" for p in streamed) == by_ref.message.content
    assert "second:1" in {m.model for m in client.ps().models}

    assert client.pull(ref).status == "success"  # into the repository under its own name: chatty version 1
    assert _model_folders(tmp_path / "repo") == ["chatty", "first", "second"]
    again = client.chat(model=ref, messages=asked, options=greedy)
    assert again.message.content == by_ref.message.content
    assert "chatty:1" in {m.model for m in client.ps().models}  # the latest pull of the reference
    assert client.show(ref).details.format == "gguf"
    listed = {m.model: m for m in client.list().models}  # listed by the references too, as Ollama does
    assert {ref, f"{untagged}:latest", "chatty:1", "first:1", "second:1"} <= set(listed)
    assert listed[ref].digest is not None and listed[ref].digest == listed["chatty:1"].digest

    status, message = _chat(
        server.url, "/v1/messages", {"model": ref, "max_tokens": 4, "messages": asked, "temperature": 0}
    )
    assert status == 200 and message["model"] == ref and message["content"]
    status, completion = _chat(
        server.url, "/v1/chat/completions", {"model": ref, "max_tokens": 12, "messages": asked, "temperature": 0}
    )
    assert status == 200 and completion["choices"][0]["message"]["content"] == by_ref.message.content
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model=f"{registry.host}/library/never-pulled:1", messages=asked)
    assert missing.value.status_code == 404 and "pull it first" in missing.value.error

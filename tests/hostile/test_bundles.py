"""Bundles through the real CLI: a signed round trip serves the same answers; hostile bundles are refused.

Every refusal exits 1 with a one-line reason, and leaves the repository without a new model or temp folder.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import sys
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runner.core.errors import SigningUnavailable
from edge_runner.core.manifest import read_manifest
from edge_runner.repository.signing import generate_keypair
from tests.conftest import ServerProcess
from tests.hostile.conftest import DIGITS, Cli, Keys, Member, gnu_sparse_member, members, pack, pax_sparse_member

SIZE = read_manifest(DIGITS).files[0].size  # of model.onnx, the embedded digits model's one file


def _logits(url: str, model: str, x: np.ndarray) -> np.ndarray:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    request = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=60) as resp:
        out = json.loads(resp.read())["outputs"][0]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def test_signed_round_trip_serves_the_same_answers(
    cli: Cli, start_server: Callable[..., ServerProcess], digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    made = cli("models", "--json", "keygen", "--out", str(cli.tmp / "alice"))
    assert made.returncode == 0, made.stderr
    key_id = json.loads(made.stdout)["key_fingerprint"]
    assert stat.S_IMODE((cli.tmp / "alice.key").stat().st_mode) == 0o600 and (cli.tmp / "alice.pub").is_file()
    bundle = str(cli.tmp / "digits.tgz")
    exported = cli("models", "--json", "export", "digits", "--out", bundle, "--sign", str(cli.tmp / "alice.key"))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["key_fingerprint"] == key_id
    imported = cli("models", "--json", "import", bundle, "--name", "copy", "--verify", str(cli.tmp / "alice.pub"))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["signature"] == "verified"
    inspected = json.loads(cli("models", "--json", "inspect", "copy").stdout)
    assert inspected["checksums"] == "ok" and inspected["source"]["bundle"]["key_fingerprint"] == key_id
    assert sorted(p.name for p in cli.repo.iterdir()) == ["copy"]  # no temp folder left behind
    server = start_server("--models", "digits,copy", env=cli.env)
    x, _ = digits_holdout
    assert np.array_equal(_logits(server.url, "copy", x[:32]), _logits(server.url, "digits", x[:32]))


def test_trust_folder_verifies_without_flag(cli: Cli, keys: Keys, signed_bundle: bytes) -> None:
    cli.trust.mkdir(parents=True)
    shutil.copy(keys.alice_pub, cli.trust / "alice.pub")
    out = cli("models", "import", cli.write("b.tgz", signed_bundle), EDGE_RUNNER_REQUIRE_SIGNED_BUNDLES="true")
    assert out.returncode == 0, out.stderr
    assert f"imported digits version 1 (signature verified, key {keys.alice_id})" in out.stdout


def test_untrusted_signer_is_imported_with_a_warning_when_signing_is_optional(cli: Cli, mallory_bundle: bytes) -> None:
    out = cli("models", "import", cli.write("b.tgz", mallory_bundle))
    assert out.returncode == 0, out.stderr
    assert "NOT verified" in out.stdout and "its signature was not checked" in out.stderr


def _without(bundle: bytes, name: str) -> list[Member | bytes]:
    return [m for m in members(bundle) if m.name != name]


def _flip_file_byte(bundle: bytes) -> bytes:
    items = members(bundle)
    model = next(m for m in items if m.name == "model.onnx")
    model.data = model.data[:100] + bytes([model.data[100] ^ 1]) + model.data[101:]
    return pack(list(items))


def _edit_manifest(bundle: bytes) -> bytes:
    items = members(bundle)
    manifest = items[0]
    assert manifest.name == "manifest.json" and manifest.data.startswith(b"{")
    manifest.data = b"{ " + manifest.data[1:]  # same JSON meaning, other bytes: still not what was signed
    return pack(list(items))


#: name -> (bundle from the plain/signed/mallory bundle, extra CLI args, env, what stderr says)
CASES: dict[str, tuple[Callable[[dict[str, bytes]], bytes], list[str], dict[str, str], str]] = {
    "gnu-sparse": (
        lambda b: pack([*_without(b["plain"], "model.onnx"), gnu_sparse_member()]),
        [],
        {},
        "member 'model.onnx' is a sparse file",
    ),
    "pax-sparse": (
        lambda b: pack([*_without(b["plain"], "model.onnx"), pax_sparse_member()]),
        [],
        {},
        "is a sparse file (it would expand far beyond its stored bytes)",
    ),
    "symlink": (
        lambda b: pack([members(b["plain"])[0], Member("model.onnx", type=tarfile.SYMTYPE, linkname="/etc/passwd")]),
        [],
        {},
        "member 'model.onnx' is a symbolic link; bundles hold only regular files and folders",
    ),
    "hard-link": (
        lambda b: pack([members(b["plain"])[0], Member("model.onnx", type=tarfile.LNKTYPE, linkname="manifest.json")]),
        [],
        {},
        "member 'model.onnx' is a hard link",
    ),
    "fifo": (
        lambda b: pack([members(b["plain"])[0], Member("model.onnx", type=tarfile.FIFOTYPE)]),
        [],
        {},
        "member 'model.onnx' is a device or fifo",
    ),
    "unlisted-member": (
        lambda b: pack([*members(b["plain"]), Member("run.sh", b"#!/bin/sh\nrm -rf ~\n")]),
        [],
        {},
        "member 'run.sh' appears twice or is not listed in manifest.json",
    ),
    "dotdot-member": (
        lambda b: pack([*members(b["plain"]), Member("../escaped.onnx", b"x")]),
        [],
        {},
        "member '../escaped.onnx' is not a plain relative path",
    ),
    "absolute-member": (
        lambda b: pack([*members(b["plain"]), Member("/tmp/escaped.onnx", b"x")]),
        [],
        {},
        "member '/tmp/escaped.onnx' is not a plain relative path",
    ),
    "dotdot-in-manifest": (
        lambda b: pack([Member("manifest.json", members(b["plain"])[0].data.replace(b'"model.onnx"', b'"../m.onnx"'))]),
        [],
        {},
        "file path '../m.onnx' must be relative",
    ),
    "duplicate-member": (
        lambda b: pack([*members(b["plain"]), members(b["plain"])[-1]]),
        [],
        {},
        "member 'model.onnx' appears twice",
    ),
    "size-mismatch": (
        lambda b: pack(
            [*_without(b["plain"], "model.onnx"), Member("model.onnx", members(b["plain"])[-1].data + b"!")]
        ),
        [],
        {},
        f"model.onnx is {SIZE + 1} bytes in the bundle, manifest.json says {SIZE}",
    ),
    "over-max-bundle-bytes": (
        lambda b: b["plain"],
        [],
        {"EDGE_RUNNER_MAX_BUNDLE_BYTES": "1000"},
        f"unpacks to {SIZE} bytes, more than max_bundle_bytes (1000): refusing it",
    ),
    "tampered-file-byte": (
        lambda b: _flip_file_byte(b["plain"]),
        [],
        {},
        "sha256 of model.onnx is",
    ),
    "tampered-signed-file-byte": (
        lambda b: _flip_file_byte(b["signed"]),
        ["--verify", "ALICE"],
        {},
        "the bundle was damaged or modified - refusing it, nothing was imported",
    ),
    "tampered-manifest": (
        lambda b: _edit_manifest(b["signed"]),
        ["--verify", "ALICE"],
        {},
        "manifest.json does not match its signature for key sha256:",
    ),
    "unsigned-when-required": (
        lambda b: b["plain"],
        [],
        {"EDGE_RUNNER_REQUIRE_SIGNED_BUNDLES": "true"},
        "is not signed and require_signed_bundles is on: refusing it",
    ),
    "unsigned-with-verify": (
        lambda b: b["plain"],
        ["--verify", "ALICE"],
        {},
        "is not signed and --verify",
    ),
    "untrusted-signer-when-required": (
        lambda b: b["mallory"],
        [],
        {"EDGE_RUNNER_REQUIRE_SIGNED_BUNDLES": "true"},
        "which is not in the trust folder",
    ),
    "signed-by-another-key": (
        lambda b: b["mallory"],
        ["--verify", "ALICE"],
        {},
        ": another key - refusing it",
    ),
    "manifest-not-first": (
        lambda b: pack(list(reversed(members(b["plain"])))),
        [],
        {},
        "the first member must be manifest.json",
    ),
    "truncated": (
        lambda b: b["plain"][: len(b["plain"]) // 2],
        [],
        {},
        "is damaged or not a bundle made by 'edge-runner models export'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_bundle_is_refused(
    case: str, cli: Cli, keys: Keys, plain_bundle: bytes, signed_bundle: bytes, mallory_bundle: bytes
) -> None:
    build, args, env, message = CASES[case]
    cli.trust.mkdir(parents=True)
    shutil.copy(keys.alice_pub, cli.trust / "alice.pub")  # alice is trusted here; mallory is not
    bundle = cli.write(
        "hostile.tgz", build({"plain": plain_bundle, "signed": signed_bundle, "mallory": mallory_bundle})
    )
    out = cli("models", "import", bundle, *[str(keys.alice_pub) if a == "ALICE" else a for a in args], **env)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert message in out.stderr and out.stderr.startswith("edge-runner: "), out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    cli.assert_repository_unchanged()
    assert not list(cli.tmp.rglob("escaped*")) and not Path("/tmp/escaped.onnx").exists()


def test_bad_key_in_trust_folder_is_a_config_error(cli: Cli, signed_bundle: bytes) -> None:
    cli.trust.mkdir(parents=True)
    (cli.trust / "broken.pub").write_text("not a key\n")
    out = cli("models", "import", cli.write("b.tgz", signed_bundle))
    assert out.returncode == 2 and "trust folder (setting trust_dir)" in out.stderr and "broken.pub" in out.stderr
    cli.assert_repository_unchanged()


def test_keygen_never_overwrites(cli: Cli) -> None:
    assert cli("models", "keygen", "--out", str(cli.tmp / "k")).returncode == 0
    again = cli("models", "keygen", "--out", str(cli.tmp / "k"))
    assert again.returncode == 1 and "already exists; keygen never overwrites a key" in again.stderr


def test_signing_without_cryptography_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import cryptography -> ImportError
    with pytest.raises(SigningUnavailable, match=re.escape("pip install 'edge-runner[sign]'")):
        generate_keypair(tmp_path / "k")
    assert list(tmp_path.iterdir()) == []

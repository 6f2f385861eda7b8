"""Ed25519 keys and the bundle signature policy (``models keygen``, ``export --sign``, ``import --verify``).

A signature covers the exact ``manifest.json`` bytes, whose file list carries every sha256 and size that
import verifies. ``cryptography`` is imported lazily: without it, only unsigned bundles work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runner.core.errors import (
    ConfigError,
    InvalidInput,
    SignatureError,
    SigningUnavailable,
    UntrustedBundle,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_NAME = "manifest.json.sig"


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise SigningUnavailable(
            "signing and verifying bundles needs the 'cryptography' package: pip install 'edge-runner[sign]'"
        ) from None


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw 32-byte public key; names the signer in bundles and messages."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return "sha256:" + hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()


def generate_keypair(prefix: Path) -> tuple[Path, Path, str]:
    """Write ``PREFIX.key`` (PEM PKCS8, mode 0600) and ``PREFIX.pub`` (PEM); return both paths and the fingerprint."""
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    if key_path.exists() or pub_path.exists():
        raise InvalidInput(f"{prefix}.key/.pub already exists; keygen never overwrites a key - pick another --out")
    key = Ed25519PrivateKey.generate()
    with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # whatever the umask
        fh.write(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    pub_path.write_bytes(key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path, fingerprint(key.public_key())


def _read_key(path: Path, private: bool) -> object:
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization as ser

    try:
        data = Path(path).read_bytes()
        if private:
            ssh = b"OPENSSH PRIVATE KEY" in data
            return ser.load_ssh_private_key(data, None) if ssh else ser.load_pem_private_key(data, None)
        return ser.load_ssh_public_key(data) if data.startswith(b"ssh-") else ser.load_pem_public_key(data)
    except (OSError, ValueError, TypeError) as exc:  # TypeError: the private key is encrypted
        raise InvalidInput(f"cannot read {path} as an unencrypted key in PEM or OpenSSH format ({exc})") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM (PKCS8) or OpenSSH file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = _read_key(path, private=True)
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} is not an Ed25519 private key; make one with 'edge-runner models keygen'")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM (SubjectPublicKeyInfo) or OpenSSH (``ssh-ed25519 ...``) file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = _read_key(path, private=False)
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"{path} is not an Ed25519 public key; use the .pub file 'models keygen' wrote")
    return key


def _trusted_keys(trust_dir: Path) -> dict[str, tuple[Path, Ed25519PublicKey]]:
    keys: dict[str, tuple[Path, Ed25519PublicKey]] = {}
    for path in sorted(trust_dir.glob("*.pub")) if trust_dir.is_dir() else []:
        try:
            key = load_public_key(path)
        except InvalidInput as exc:
            raise ConfigError(f"trust folder (setting trust_dir): {exc.message}; remove or replace it") from None
        keys.setdefault(fingerprint(key), (path, key))
    return keys


def sign_manifest(manifest_bytes: bytes, key_path: Path) -> tuple[bytes, str]:
    """The ``manifest.json.sig`` member for ``manifest_bytes`` and the signer's fingerprint."""
    key = load_private_key(key_path)
    signer = fingerprint(key.public_key())
    signature = base64.b64encode(key.sign(manifest_bytes)).decode("ascii")
    body = {"algorithm": "ed25519", "key_fingerprint": signer, "signature": signature}
    return (json.dumps(body, indent=2) + "\n").encode("utf-8"), signer


def _parse_signature(data: bytes, bundle: Path) -> tuple[str, bytes]:
    try:
        body = json.loads(data.decode("utf-8"))
        if body.get("algorithm") != "ed25519":
            raise ValueError(f"algorithm {body.get('algorithm')!r}, expected 'ed25519'")
        return str(body["key_fingerprint"]), base64.b64decode(str(body["signature"]), validate=True)
    except (ValueError, KeyError, AttributeError, RecursionError, binascii.Error) as exc:
        raise SignatureError(f"{bundle}: {SIGNATURE_NAME} is unreadable ({exc}); refusing the bundle") from None


def check_signature(
    manifest_bytes: bytes, sig: bytes | None, bundle: Path, verify_key: Path | None, trust_dir: Path, required: bool
) -> dict[str, str]:
    """Apply the signature policy (docs/bundles.md); returns how the bundle was authenticated."""
    if sig is None:
        if verify_key is not None or required:
            why = f"--verify {verify_key} asks for a signature" if verify_key else "require_signed_bundles is on"
            raise UntrustedBundle(
                f"{bundle} is not signed and {why}: refusing it; ask its publisher to export it with --sign KEY "
                f"and give you their .pub key (for --verify, or for the trust folder {trust_dir})"
            )
        return {"signature": "none"}
    _require_cryptography()
    from cryptography.exceptions import InvalidSignature

    claimed, signature = _parse_signature(sig, bundle)
    trusted = {} if verify_key else _trusted_keys(trust_dir)
    if verify_key is None and claimed not in trusted:
        if required:
            raise UntrustedBundle(
                f"{bundle} is signed by key {claimed}, which is not in the trust folder {trust_dir}, and "
                "require_signed_bundles is on: refusing it; if you trust that key, copy its .pub file there"
            )
        return {"signature": "unverified", "key_fingerprint": claimed}
    where, key = (verify_key, load_public_key(verify_key)) if verify_key else trusted[claimed]
    actual = fingerprint(key)
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        why = "was modified after it was signed" if claimed == actual else f"names signer {claimed}: another key"
        raise SignatureError(
            f"{bundle}: manifest.json does not match its signature for key {actual} ({where}); the bundle {why} "
            "- refusing it, nothing was imported"
        ) from None
    return {"signature": "verified", "key_fingerprint": actual, "key": str(where)}

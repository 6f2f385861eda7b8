"""The CLI verbs other than serve/config: models, run, ps, doctor, bench."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_runner.config.profiles import Profile
from edge_runner.config.settings import Settings
from edge_runner.core.errors import InvalidInput
from edge_runner.core.paths import DEFAULTS_DIR
from edge_runner.repository.bundles import export_bundle, import_bundle
from edge_runner.repository.signing import generate_keypair
from edge_runner.repository.store import ModelRepository


def _print(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def models(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str] | None = None) -> int:
    """``models list|inspect|add|rm|export|import|keygen|package|push|pull`` on the configured repository."""
    root = settings.repository_root()
    # The embedded defaults are visible (list, inspect, export) but read-only (rm only touches ``root``).
    repo = ModelRepository(root, extra_roots=[DEFAULTS_DIR])
    if args.action == "list":
        rows = [
            {"name": n, "versions": repo.versions(n), "source": "repository" if (root / n).is_dir() else "embedded"}
            for n in repo.list_models()
        ]
        text = "\n".join(f"{r['name']:<32} versions {r['versions']}  ({r['source']})" for r in rows)
        _print(rows, args.json, text or f"no models in {root}")
    elif args.action == "inspect":
        manifest = repo.verify(args.name, args.version)
        data = {**manifest.to_json(), "checksums": "ok"}
        _print(data, args.json, json.dumps(data, indent=2))
    elif args.action == "add":
        manifest = repo.add(args.path, args.name, args.version)
        _print(
            manifest.to_json(),
            args.json,
            f"added {manifest.name} version {manifest.version} "
            f"({manifest.format}, {sum(f.size for f in manifest.files)} bytes) to {repo.root}",
        )
    elif args.action == "rm":
        repo.remove(args.name, args.version)
        _print(
            {"removed": args.name, "version": args.version},
            args.json,
            f"removed {args.name}" + (f" version {args.version}" if args.version else ""),
        )
    elif args.action == "export":
        folder, manifest = repo.resolve(args.name, args.version)
        signer = export_bundle(folder, manifest, args.out, args.sign)
        _print(
            {"bundle": str(args.out), "name": manifest.name, "version": manifest.version, "key_fingerprint": signer},
            args.json,
            f"wrote {args.out}" + (f", signed by key {signer}" if signer else " (unsigned)"),
        )
    elif args.action == "import":
        return _import_bundle(repo, args, settings)
    elif args.action in ("package", "push", "pull"):
        return _oci(repo, args, settings, environ or {})
    elif args.action == "keygen":
        key_path, pub_path, key_id = generate_keypair(args.out)
        _print(
            {"private_key": str(key_path), "public_key": str(pub_path), "key_fingerprint": key_id},
            args.json,
            f"wrote {key_path} (private, keep it secret) and {pub_path} (share it; importers put it in their "
            f"trust folder, default {settings.trust_root()})\nfingerprint {key_id}",
        )
    return 0


def _import_bundle(repo: ModelRepository, args: argparse.Namespace, settings: Settings) -> int:
    """Check and unpack a bundle (docs/bundles.md); a refusal raises a typed error and imports nothing."""
    added = import_bundle(
        repo,
        args.bundle,
        args.name,
        verify_key=args.verify,
        trust_dir=settings.trust_root(),
        require_signed=settings.require_signed_bundles,
        max_bytes=settings.max_bundle_bytes,
    )
    trust = added.source.get("bundle", {})
    how = {
        "verified": f"signature verified, key {trust.get('key_fingerprint')}",
        "unverified": f"signed by key {trust.get('key_fingerprint')}, which is not trusted here: NOT verified",
        "none": "unsigned",
    }.get(trust.get("signature"), "unsigned")
    if trust.get("signature") == "unverified":
        print(
            f"edge-runner: warning: {args.bundle} is signed by key {trust.get('key_fingerprint')}, which is not in "
            f"the trust folder {settings.trust_root()}; its signature was not checked (pass --verify KEY.pub)",
            file=sys.stderr,
        )
    _print(
        {**added.to_json(), "signature": trust.get("signature", "none")},
        args.json,
        f"imported {added.name} version {added.version} ({how})",
    )
    return 0


def _docker_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Path | None:
    """Credentials file: --docker-config, else ``$DOCKER_CONFIG/config.json`` as docker reads it; None lets oras
    read ``~/.docker/config.json``."""
    folder = environ.get("DOCKER_CONFIG")
    return args.docker_config or (Path(folder) / "config.json" if folder else None)


def _oci(repo: ModelRepository, args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """``models package|push|pull`` (docs/distribution.md); oras is imported only by push and pull."""
    from edge_runner.repository import oci

    if args.action == "pull":
        config = _docker_config(args, environ)
        added = oci.pull(
            repo,
            args.ref,
            args.name,
            plain_http=args.plain_http,
            docker_config=config,
            max_bytes=settings.max_bundle_bytes,
        )
        digest = added.source["oci"]["digest"]
        _print(added.to_json(), args.json, f"pulled {args.ref} ({digest}) as {added.name} version {added.version}")
        return 0
    name, sep, version = args.model.partition(":")
    if sep and not version.isdigit():
        raise InvalidInput(f"{args.model!r}: expected NAME or NAME:VERSION with a version number")
    folder, manifest = repo.resolve(name, int(version) if sep else None)
    if args.action == "package":
        digest = oci.package(folder, manifest, args.out)
        where, done = str(args.out), "packaged"
    else:
        config = _docker_config(args, environ)
        digest = oci.push(folder, manifest, args.ref, plain_http=args.plain_http, docker_config=config)
        where, done = args.ref, "pushed"
    _print(
        {"name": manifest.name, "version": manifest.version, "ref": where, "digest": digest},
        args.json,
        f"{done} {manifest.name} version {manifest.version} to {where} ({digest})",
    )
    return 0


def _load_inputs(path: Path, input_names: list[str]) -> dict[str, np.ndarray]:
    if path.suffix == ".npy":
        if len(input_names) != 1:
            raise InvalidInput(f"model has inputs {input_names}; use a .json file naming each")
        return {input_names[0]: np.load(path, allow_pickle=False)}
    data = json.loads(path.read_text())
    if "inputs" in data:  # a v2 request body
        return {i["name"]: np.asarray(i["data"]).reshape(i["shape"]) for i in data["inputs"]}
    return {k: np.asarray(v) for k, v in data.items()}


def run(args: argparse.Namespace, settings: Settings, profile: Profile) -> int:
    """``run MODEL --input FILE`` or ``run LLM [PROMPT]`` in this process."""
    from dataclasses import replace

    from edge_runner.cli.serve import build_manager

    if Path(args.model).exists():
        settings = replace(settings, model_path=args.model, model_name=Path(args.model).stem)
    manager = build_manager(settings, profile)
    name = settings.model_name or args.model
    try:
        entry = manager.load(name)[-1]
        if entry.metadata.capabilities.generate:
            from edge_runner.cli.run_llm import run_chat

            return int(run_chat(manager, entry.name, args.prompt))
        if args.input is None:
            raise InvalidInput(f"{name} is a tensor model: pass --input FILE (.npy or .json)")
        inputs = _load_inputs(args.input, [t.name for t in entry.metadata.inputs])
        wanted = {t.name: t.datatype for t in entry.metadata.inputs}
        from edge_runner.core.datatypes import to_numpy

        inputs = {k: v.astype(to_numpy(wanted[k])) if k in wanted else v for k, v in inputs.items()}
        _, results = manager.infer(name, None, inputs, {}, None)
    finally:
        manager.close()
    out = {k: v.tolist() for k, v in results.items()}
    text = "\n".join(
        f"{k} {list(v.shape)}: {np.array2string(v, precision=4, threshold=20)}" for k, v in results.items()
    )
    if not args.json and len(results) == 1:
        (value,) = results.values()
        if value.ndim == 2:
            text += f"\nargmax: {value.argmax(axis=1).tolist()}"
    _print(out, args.json, text)
    return 0


def _get_json(url: str, api_key: str) -> Any:
    import urllib.request

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
        return json.loads(resp.read())


def ps(args: argparse.Namespace, settings: Settings) -> int:
    """Ask a running server what it has loaded."""
    import urllib.error

    url = settings.url  # --url is the CLI layer of the url setting
    try:
        rows = _get_json(url.rstrip("/") + "/api/ps", settings.api_key)["models"]
    except (urllib.error.URLError, OSError) as exc:
        print(f"edge-runner ps: no server at {url} ({exc}); start one with 'edge-runner serve'")
        return 1
    lines = [
        f"{'NAME':<20} {'VER':<4} {'BACKEND/DEVICE':<34} {'RSS MB':>7} {'MAPPED MB':>9} {'IDLE':>7} "
        f"{'KEEP-ALIVE':>10} {'P50 MS':>7} {'P99 MS':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r['name']:<20} {r['version']:<4} {r['backend'] + '/' + r['device']:<34} "
            f"{r['memory']['rss_bytes'] / 1e6:>7.1f} {r['memory']['mapped_bytes'] / 1e6:>9.1f} "
            f"{r['idle_s']:>6.0f}s {r['keep_alive']:>10} {r['latency']['p50_ms']:>7.2f} "
            f"{r['latency']['p99_ms']:>7.2f}"
        )
        lines += [f"    {s['candidate']}: {s['reason']}" for s in r.get("selection", []) if not s["chosen"]]
    _print(rows, args.json, "\n".join(lines))
    return 0


def doctor(args: argparse.Namespace, settings: Settings) -> int:
    """Hardware, runtimes, devices and the profile ``auto`` picks."""
    from edge_runner.cli import doctor_report as doc

    report = doc.collect(profile=args.plan_profile, profiles_folder=settings.profiles_root())
    _print(report, args.json, doc.render_text(report))
    return 0


def bench(args: argparse.Namespace, settings: Settings) -> int:
    """Closed-loop load generator over HTTP against a running server."""
    from edge_runner.cli.loadgen import run_tensor_bench

    result = run_tensor_bench(settings.url, args.model, args.concurrency, args.requests, args.batch)
    text = (
        f"{args.model}: {result['requests_per_s']:.1f} req/s, p50 {result['p50_ms']:.2f} ms, "
        f"p95 {result['p95_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, errors {int(result['errors'])} "
        f"(concurrency {args.concurrency}, {args.requests} requests, batch {args.batch})"
    )
    _print(result, args.json, text)
    return 0

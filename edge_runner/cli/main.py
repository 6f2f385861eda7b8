"""``edge-runner``: the command line. Heavy runtimes are imported only inside the verbs that need them.

No verb means ``serve`` (the seed's container line:
``edge-runner --model-name NAME --model-path PATH [--max-seq-len N] [--enable-metrics]``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_runner import __version__
from edge_runner.config.profiles import Profile, load_profile
from edge_runner.config.settings import (
    SETTING_NAMES,
    Resolved,
    Settings,
    config_file_path,
    describe,
    load_config,
    service_links,
    setting_fields,
)
from edge_runner.core.errors import ConfigError, EdgeRunnerError

VERBS = ("serve", "convert", "models", "run", "ps", "doctor", "bench", "config")
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

# Flags the seed and Ollama users already type, mapped to our settings.
_ALIASES = {"enable_metrics": (["--enable-metrics"], ["--disable-metrics"]), "use_mmap": (["--mmap"], ["--no-mmap"])}


def _add_config_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML file of settings (also EDGE_RUNNER_CONFIG)",
    )


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (also EDGE_RUNNER_<NAME> env vars and the config file)")
    _add_config_flag(group)
    for name, default, help_text in setting_fields():
        flag = "--" + name.replace("_", "-")
        shown = help_text if "default:" in help_text or default in ("", ()) else f"{help_text} (default: {default!r})"
        shown = shown.replace("%", "%%")
        if isinstance(default, bool):
            on, off = _ALIASES.get(name, ([flag], [f"--no-{name.replace('_', '-')}"]))
            group.add_argument(*on, dest=name, action="store_const", const=True, default=argparse.SUPPRESS, help=shown)
            group.add_argument(
                *off,
                dest=name,
                action="store_const",
                const=False,
                default=argparse.SUPPRESS,
                help=f"turn off: {name.replace('_', '-')}",
            )
        else:
            group.add_argument(
                flag, dest=name, metavar=name.split("_")[-1].upper(), default=argparse.SUPPRESS, help=shown
            )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every verb."""
    parser = argparse.ArgumentParser(
        prog="edge-runner",
        description="Convert models for the edge and serve them (KServe v2 + OpenAI API). With no verb, runs 'serve'.",
        epilog="Quick start: edge-runner serve   then   curl localhost:8000/v2/models/digits",
    )
    parser.add_argument("--version", action="version", version=f"edge-runner {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    serve = sub.add_parser(
        "serve",
        help="start the HTTP server (default verb)",
        description="Serve the model repository and the embedded defaults over HTTP.",
    )
    _add_setting_flags(serve)
    serve.add_argument("--ready-file", type=Path, default=None, help="write the bound port here once listening")
    sub.add_parser(
        "convert", help="convert a model to ONNX/OpenVINO/TFLite/GGUF (see 'convert --help')", add_help=False
    )
    _add_models_parser(sub)
    run = sub.add_parser(
        "run",
        help="one-shot local inference or chat, no server",
        description="Run a model in this process. Tensor models take --input FILE (.npy or "
        ".json {input_name: nested list}); LLMs take a prompt (interactive chat without one).",
    )
    run.add_argument("model", help="model name in the repository or a path")
    run.add_argument("prompt", nargs="?", help="prompt for an LLM")
    run.add_argument("--input", type=Path, help=".npy (single-input models) or .json file of inputs")
    run.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_setting_flags(run)
    ps = sub.add_parser("ps", help="models loaded in a running server: memory, device, idle time, keep-alive")
    ps.add_argument(
        "--url", default=None, help="server address (default: the url setting, $EDGE_RUNNER_URL, or 127.0.0.1:8000)"
    )
    _add_config_flag(ps)
    ps.add_argument("--json", action="store_true", help="print machine-readable JSON")
    doctor = sub.add_parser("doctor", help="hardware, runtimes and devices found; the profile 'auto' picks")
    doctor.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_config_flag(doctor)
    doctor.add_argument(
        "--profile",
        dest="plan_profile",
        default=None,
        help="also dry-run this profile's device preferences "
        "(e.g. intel-npu, cuda) and show what would fall back, and why",
    )
    bench = sub.add_parser("bench", help="load generator against a running server: throughput and p50/p95/p99")
    bench.add_argument("model", help="model to load-test (tensor models use random inputs of the right shape)")
    bench.add_argument("--url", default=None, help="server address (default: the url setting, $EDGE_RUNNER_URL)")
    _add_config_flag(bench)
    bench.add_argument("--concurrency", type=int, default=4, help="parallel clients (default 4)")
    bench.add_argument("--requests", type=int, default=200, help="total requests (default 200)")
    bench.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    bench.add_argument("--json", action="store_true", help="print machine-readable JSON")
    config = sub.add_parser("config", help="show every resolved setting and where it came from")
    config.add_argument("--show", action="store_true", help="print the settings table (the default action)")
    config.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_setting_flags(config)
    return parser


def _add_models_parser(sub: Any) -> None:
    models = sub.add_parser(
        "models", help="model repository: list, inspect, add, rm, export, import, keygen, package, push, pull"
    )
    models.add_argument(
        "--model-repository",
        default=argparse.SUPPRESS,
        help="repository folder (default: the model_repository setting, else the XDG data dir)",
    )
    _add_config_flag(models)
    models.add_argument("--json", action="store_true", help="print machine-readable JSON")
    actions = models.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every model and its versions")
    inspect = actions.add_parser("inspect", help="print a model's manifest and verify its checksums")
    inspect.add_argument("name")
    inspect.add_argument("--version", type=int, default=None)
    add = actions.add_parser(
        "add",
        help="register an ONNX or GGUF file (every part of a split GGUF), or a folder with manifest.json (copied)",
    )
    add.add_argument("path", type=Path)
    add.add_argument("--name", required=True, help="model name (letters, digits, . _ -)")
    add.add_argument("--version", type=int, default=None, help="version number (default: next)")
    rm = actions.add_parser("rm", help="remove a model or one version")
    rm.add_argument("name")
    rm.add_argument("--version", type=int, default=None)
    export = actions.add_parser(
        "export",
        help="pack a model version into a .tar.gz bundle for offline copy, optionally signed",
        description="Verify the version's checksums and write a bundle: manifest.json, an optional Ed25519 "
        "signature of it (manifest.json.sig), then the files it lists. See docs/bundles.md.",
    )
    export.add_argument("name")
    export.add_argument("--version", type=int, default=None)
    export.add_argument("--out", type=Path, required=True, help="bundle file to write (appears only when complete)")
    export.add_argument(
        "--sign",
        type=Path,
        default=None,
        metavar="KEYFILE",
        help="sign with this Ed25519 private key (PEM or OpenSSH, from 'models keygen'; needs edge-runner[sign])",
    )
    imp = actions.add_parser(
        "import",
        help="check a bundle made by 'models export' and add it to the repository",
        description="Stream the bundle into the repository, accepting only the files its manifest.json lists, "
        "with matching sizes and sha256, up to the max_bundle_bytes setting; nothing becomes visible unless every "
        "check passes. A signed bundle is checked against --verify, else the *.pub keys in the trust folder "
        "(trust_dir setting); with require_signed_bundles, unsigned or untrusted bundles are refused.",
    )
    imp.add_argument("bundle", type=Path)
    imp.add_argument("--name", default=None, help="register under another name")
    imp.add_argument(
        "--verify",
        type=Path,
        default=None,
        metavar="PUBKEYFILE",
        help="require a valid signature by this Ed25519 public key (the signer's .pub) instead of the trust folder",
    )
    keygen = actions.add_parser(
        "keygen",
        help="make an Ed25519 key pair for signing bundles: PREFIX.key (private, 0600) and PREFIX.pub",
        description="Write PREFIX.key (PEM, keep it secret, pass it to 'models export --sign') and PREFIX.pub "
        "(give it to importers: 'models import --verify PREFIX.pub' or copy it into their trust folder). "
        "Never overwrites. Needs the cryptography package (pip install 'edge-runner[sign]').",
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="PREFIX", help="path prefix of the two key files")
    _add_oci_parsers(actions)


def _add_oci_parsers(actions: Any) -> None:
    """``models package|push|pull``: OCI artifacts (docs/distribution.md)."""
    package = actions.add_parser(
        "package",
        help="write a model version as an OCI image layout folder (manifest.json as config, files as layers)",
    )
    package.add_argument("model", metavar="NAME[:VER]")
    package.add_argument("--out", type=Path, required=True, help="folder to create (appears only when complete)")
    push = actions.add_parser("push", help="push a model version to an OCI registry (REF: host[:port]/repo[:tag])")
    push.add_argument("model", metavar="NAME[:VER]")
    push.add_argument("ref", metavar="REF")
    pull = actions.add_parser(
        "pull",
        help="pull a model from an OCI registry (or a 'models package' folder), digests verified",
        description="Fetch the artifact, check every blob's size and sha256 against the OCI manifest and the model's "
        "manifest.json, and import it atomically: a refused or interrupted pull leaves no model behind.",
    )
    pull.add_argument("ref", metavar="REF", help="host[:port]/repo[:tag|@digest], or a folder from 'models package'")
    pull.add_argument("--name", default=None, help="register under another name")
    for verb in (push, pull):
        verb.add_argument(
            "--plain-http", action="store_true", help="use http, not https (default only for loopback registries)"
        )
        verb.add_argument(
            "--docker-config",
            type=Path,
            default=None,
            metavar="FILE",
            help="credentials file (default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json)",
        )


def resolve_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Resolved, Profile]:
    """Layer defaults < profile < config file < env < CLI, once per process; returns (resolved, profile)."""
    cli = {k: v for k, v in vars(args).items() if k in SETTING_NAMES and v is not None}
    config_file = config_file_path(getattr(args, "config_file", None), environ)
    first = load_config(cli, environ, config_file)
    profile = load_profile(first.settings.profile, folder=first.settings.profiles_root())
    resolved = load_config(cli, environ, config_file, profile.settings, profile.name)
    return resolved, profile


def _setup_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), None)
    if not isinstance(level, int):
        raise ConfigError(f"bad value for 'log_level': {settings.log_level!r}; use debug, info, warning or error")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _normalise(argv: list[str]) -> list[str]:
    """No verb (or only flags) means serve."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        return ["serve", *argv]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 runtime error, 2 usage/config error)."""
    raw = _normalise(list(sys.argv[1:] if argv is None else argv))
    if raw and raw[0] == "convert":
        try:
            from converters.cli import main as convert_main
        except ImportError:
            print(
                "edge-runner: 'convert' is not part of this binary or install; install the package with its "
                "'convert' extra (pip install 'edge-runner[convert]') and run it from Python",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return int(convert_main(raw[1:]))
    args = build_parser().parse_args(raw)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"edge-runner: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except EdgeRunnerError as exc:
        print(f"edge-runner: {exc.message}", file=sys.stderr)
        return EXIT_ERROR


def _dispatch(args: argparse.Namespace) -> int:
    from edge_runner.cli import verbs as cli_verbs

    resolved, profile = resolve_settings(args, os.environ)  # the one read of the environment
    settings = resolved.settings
    if args.verb == "models":
        return cli_verbs.models(args, settings, os.environ)
    if args.verb == "ps":
        return cli_verbs.ps(args, settings)
    if args.verb == "doctor":
        return cli_verbs.doctor(args, settings)
    if args.verb == "bench":
        return cli_verbs.bench(args, settings)
    if args.verb == "config":
        rows = describe(resolved)
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
        else:
            for row in rows:
                print(f"{row['name']:<26} {row['value']!s:<28} {row['source']}")
        return EXIT_OK
    _setup_logging(resolved.settings)
    links = service_links(os.environ)
    if links:
        logging.getLogger("edge_runner.config").info(
            "ignoring %d Kubernetes service-link variables (%s); set enableServiceLinks: false to drop them",
            len(links),
            ", ".join(links),
        )
    if args.verb == "run":
        return cli_verbs.run(args, resolved.settings, profile)
    from edge_runner.cli.serve import serve

    return serve(resolved.settings, profile, ready_file=args.ready_file)

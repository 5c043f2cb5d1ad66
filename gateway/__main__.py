"""The `msal-gateway` command (also `python -m gateway`): serve, check-config, demo, devidp.

Parses arguments, loads settings, hands over. Configuration problems are printed one per line,
naming the variable to fix, with exit status 2 and never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from gateway.config.loading import (
    ConfigFileError,
    describe_errors,
    load_settings,
    unknown_variables,
)
from gateway.config.settings import Settings
from gateway.telemetry import build_info, logs

CONFIG_ERROR_STATUS = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msal-gateway",
        description="Reverse-proxy sidecar that puts a web application behind Microsoft sign-in.",
    )
    parser.add_argument("--version", action="version", version=build_info.describe())
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the gateway"),
        ("check-config", "validate the configuration and print every problem"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config", type=Path, help="YAML settings file (env vars win)")
    demo = commands.add_parser(
        "demo", help="run the development identity provider, a sample app and the gateway"
    )
    demo.add_argument("--port", type=int, default=8000, help="gateway port (default 8000)")
    commands.add_parser(
        "devidp", help="run the development identity provider alone", add_help=False
    )
    return parser


def _load(config: Path | None) -> Settings | list[str]:
    problems = unknown_variables(os.environ)
    try:
        settings = load_settings(config)
    except ConfigFileError as exc:
        return [*problems, str(exc)]
    except ValidationError as exc:
        return [*problems, *describe_errors(exc)]
    if settings.log.tracing and importlib.util.find_spec("opentelemetry.sdk") is None:
        problems.append(
            "GATEWAY_LOG__TRACING is true but OpenTelemetry is not installed: install "
            "msal-gateway[otel]"
        )
    return problems or settings


def _report(problems: list[str]) -> int:
    for line in problems:
        print(f"msal-gateway: {line}", file=sys.stderr)
    return CONFIG_ERROR_STATUS


# The container image leaves the development identity provider out: it signs in anyone who clicks
# a test user, and a production image has no use for that.
WITHOUT_DEVIDP = (
    "the development identity provider is not installed here (the container image leaves it "
    "out); run the demo from a source checkout with ./scripts/demo.sh, or in a virtualenv with "
    "pip install msal-gateway"
)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] in (["devidp"], ["demo"]) and importlib.util.find_spec("devidp") is None:
        return _report([WITHOUT_DEVIDP])
    if args_list[:1] == ["devidp"]:
        from devidp.cli import main as devidp_main

        return devidp_main(args_list[1:])
    args = _parser().parse_args(args_list)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "demo":
        from gateway.demo import run_demo

        return run_demo(port=args.port)
    loaded = _load(args.config)
    if isinstance(loaded, list):
        return _report(loaded)
    if args.command == "check-config":
        print(
            f"configuration OK: upstream {loaded.upstream}, authority {loaded.authority_url}, "
            f"store {loaded.session_store}"
        )
        print(build_info.describe())
        return 0
    from gateway.server.workers import is_worker, supervise, worker_count

    count = worker_count(loaded.workers, loaded.session_store)
    if count > 1 and not is_worker():
        proxy = loaded.proxy
        # Workers drain and finish their requests first; the margin covers their start-up.
        grace = proxy.drain_seconds + proxy.shutdown_grace_seconds + 5
        logs.configure(loaded.log.format, loaded.log.level)
        try:
            return supervise(count, args_list, loaded.metrics_listen, grace)
        finally:
            logs.shutdown()
    from gateway.server.serve import serve

    return serve(loaded, worker=is_worker())


if __name__ == "__main__":
    sys.exit(main())

"""The `msal-gateway` command (also `python -m gateway`): serve, check-config, demo, devidp.

Parses arguments, loads settings, hands over. Configuration problems (config/problems.py) are
printed here and nowhere else: every one found in a single run, one per line, naming the variable
or file key to fix, with exit status 2 and never a traceback. check-config and serve find the same
problems: settings first, then the machine (server/preflight.py).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config.problems import ConfigurationError, Problem
from gateway.telemetry import build_info, logs

if TYPE_CHECKING:
    from gateway.config.settings import Settings

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


def _load(config: Path | None, *, listeners: bool) -> Settings | list[Problem]:
    """The settings, or every problem with them and with the machine they are to run on."""
    # Imported here, inside main(), so that the collector stays off while they load.
    from gateway.config.loading import diagnose
    from gateway.server import preflight

    diagnosis = diagnose(os.environ, config)
    if diagnosis.partial is not None:
        # Checked even when the settings have problems, so that all of them come in one run.
        diagnosis.add(preflight.check(diagnosis.partial, listeners=listeners))
    try:
        return diagnosis.result()
    except ConfigurationError as exc:
        return list(exc.problems)


def _report(problems: list[Problem] | list[str]) -> int:
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
    # Start-up imports and builds a few hundred thousand objects that live as long as the
    # process: collections during it find no garbage and cost about 4% of the start's CPU. A
    # server turns the collector back on once it has frozen what start-up built (server/serve.py,
    # server/workers.py); every other command, and any return, turns it back on here.
    gc.disable()
    try:
        return _command(sys.argv[1:] if argv is None else argv)
    finally:
        gc.enable()


def _command(args_list: list[str]) -> int:
    if args_list[:1] in (["devidp"], ["demo"]) and importlib.util.find_spec("devidp") is None:
        return _report([WITHOUT_DEVIDP])
    if args_list[:1] == ["devidp"]:
        gc.enable()
        from devidp.cli import main as devidp_main

        return devidp_main(args_list[1:])
    args = _parser().parse_args(args_list)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "demo":
        gc.enable()
        from gateway.demo import run_demo

        try:
            return run_demo(port=args.port)
        except ConfigurationError as exc:
            return _report(list(exc.problems))
    loaded = _load(args.config, listeners=True)
    if isinstance(loaded, list):
        return _report(loaded)
    if args.command == "check-config":
        relays = "forward-auth only" if loaded.forward_auth_only else f"upstream {loaded.upstream}"
        print(
            f"configuration OK: {relays}, authority {loaded.authority_url}, "
            f"store {loaded.session_store}"
        )
        print(build_info.describe())
        from gateway.oidc.credential_files import expiry_warnings

        for warning in expiry_warnings(loaded, datetime.datetime.now(datetime.UTC)):
            print(f"warning: {warning}")
        return 0
    from gateway.server.workers import supervise, worker_count

    count = worker_count(loaded.workers, loaded.session_store)
    if count > 1:
        logs.configure(loaded.log.format, loaded.log.level)
        try:
            return supervise(
                count,
                loaded,
                work=lambda: _serve(loaded, worker=True),
                preload=lambda: _preload(loaded),
            )
        finally:
            logs.shutdown()
    return _serve(loaded, worker=False)


def _preload(settings: Settings) -> None:
    # Imported here, not at the top: a supervisor sets up prometheus_client's multiprocess mode
    # before anything imports it.
    from gateway.server.serve import preload

    preload(settings)


def _serve(settings: Settings, *, worker: bool) -> int:
    from gateway.server.serve import serve

    try:
        return serve(settings, worker=worker)
    except ConfigurationError as exc:  # a listener taken since the check, for one
        return _report(list(exc.problems))


if __name__ == "__main__":
    sys.exit(main())

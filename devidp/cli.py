"""`msal-gateway devidp`: run the development identity provider in the foreground.

Parses arguments into a `DevIdpConfig`, starts the emulator, prints where it is and who can sign
in, and stops cleanly on SIGINT or SIGTERM. Wiring it into `msal-gateway` is `__main__`'s job.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from .config import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_PORT,
    DEFAULT_TENANT_ID,
    Client,
    DevIdpConfig,
)
from .server import NonLoopbackRefused, RunningDevIdp, start

PROG = "msal-gateway devidp"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "msal-gateway" / "devidp"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run the development identity provider, an Entra ID v2 emulator for "
        "local development and tests. Never use it in production.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free port)")
    p.add_argument(
        "--browser-port",
        type=int,
        help="also serve the sign-in and sign-out pages over plain http on this loopback port "
        "(0: any free port), so a stock browser shows no certificate warning; the token endpoint "
        "and keys stay on TLS",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where ca.pem and the keys are kept and reused (default: %(default)s)",
    )
    p.add_argument("--tenant-id", default=DEFAULT_TENANT_ID, help="tenant GUID")
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="client id to register")
    p.add_argument(
        "--client-secret",
        default=DEFAULT_CLIENT_SECRET,
        help="its client secret (empty: a public client)",
    )
    p.add_argument(
        "--redirect-uri",
        action="append",
        dest="redirect_uris",
        metavar="URI",
        help="registered redirect URI, repeatable (default: any loopback or https URL)",
    )
    p.add_argument("--public-host", help="host name to put in URLs and the TLS certificate")
    p.add_argument("--expires-in", type=int, default=3600, help="access token lifetime (s)")
    p.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="listen on a non-loopback address anyway (anyone reaching it can get tokens)",
    )
    p.add_argument("--quiet", action="store_true", help="do not log every request")
    return p


def summary(running: RunningDevIdp) -> str:
    """What people need to point a client at the emulator, as printable lines."""
    lines = [
        "msal-gateway development identity provider (Entra ID v2 emulator)",
        f"  authority      {running.authority}",
        f"  discovery      {running.authority}/v2.0/.well-known/openid-configuration",
        f"  CA certificate {running.ca_path}",
        f"  browser pages  {running.browser_url}",
        f"  tenant id      {running.tenant_id}",
        f"  control API    {running.control_url}/state",
    ]
    for client in running.clients:
        secret = client.client_secret or "(public client)"
        uris = ", ".join(client.redirect_uris) if client.redirect_uris else "any loopback/https"
        lines += [
            f"  client id      {client.client_id}",
            f"  client secret  {secret}",
            f"  redirect URIs  {uris}",
        ]
    lines.append("  test users:")
    for user in running.users:
        extras = ", ".join(user.roles) if user.roles else "no roles"
        lines.append(f"    {user.username:<8} {user.name} <{user.preferred_username}> ({extras})")
    return "\n".join(lines)


async def _serve(config: DevIdpConfig) -> None:
    running = await start(config)
    print(summary(running), flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await running.stop()
        print("devidp stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM. Returns 0, or 2 for a bad configuration or address."""
    args = _parser().parse_args(argv)
    try:
        client = Client(
            client_id=args.client_id,
            client_secret=args.client_secret or None,
            redirect_uris=tuple(args.redirect_uris) if args.redirect_uris else None,
        )
        config = DevIdpConfig(
            host=args.host,
            port=args.port,
            browser_port=args.browser_port,
            tenant_id=args.tenant_id,
            clients=(client,),
            state_dir=args.state_dir,
            public_host=args.public_host,
            force_non_loopback=args.allow_non_loopback,
            expires_in=args.expires_in,
        )
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        asyncio.run(_serve(config))
    except NonLoopbackRefused as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0

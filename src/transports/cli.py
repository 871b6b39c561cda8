"""The command line: ``relaycore serve``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from relaycore import Config, ConfigError, __version__

from .server import RelayServer

__all__ = ["main"]

log = logging.getLogger("relaycore")


def load_config(path: str | None, env: dict[str, str] | None = None) -> Config:
    """Read the TOML file (if any) and apply ``RELAYCORE_*`` environment overrides."""
    text = Path(path).read_bytes() if path else b""
    return Config.from_toml(text, dict(os.environ) if env is None else env)


async def _serve(server: RelayServer, backend: str) -> None:
    async with anyio.create_task_group() as tg:
        addresses = await tg.start(server.serve)
        for addr_host, addr_port in addresses:
            shown = f"[{addr_host}]" if ":" in addr_host else addr_host
            scheme = "wss" if server.ssl_context is not None else "ws"
            log.info("relaycore %s listening on %s://%s:%d (%s)", __version__, scheme, shown, addr_port, backend)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                server.shutdown()
                break


def _backend_missing(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or None. trio is an optional dependency."""
    if backend != "trio":
        return None
    try:
        import trio  # noqa: F401
    except ImportError:
        return "the trio backend needs trio: pip install 'relaycore[trio]'"
    return None


def _cmd_serve(args: argparse.Namespace) -> int:
    missing = _backend_missing(args.backend)
    if missing is not None:
        print(f"relaycore: {missing}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"relaycore: {exc}", file=sys.stderr)
        return 2
    host = args.host if args.host is not None else config.server.host
    port = args.port if args.port is not None else config.server.port
    if args.certfile is not None:
        config.server.tls_certfile = args.certfile
    if args.keyfile is not None:
        config.server.tls_keyfile = args.keyfile
    try:
        server = RelayServer(config)
    except (OSError, ssl.SSLError) as exc:
        print(f"relaycore: cannot load the TLS certificate: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a TLS key without its certificate
        print(f"relaycore: {exc}", file=sys.stderr)
        return 2
    try:
        server.bind(host, port)
    except OSError as exc:
        print(f"relaycore: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    # A second Ctrl-C during the graceful drain stops at once, without a traceback.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(_serve, server, args.backend, backend=args.backend)
    log.info("relaycore stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaycore", description="A WebSocket relay speaking itty-sockets.")
    parser.add_argument("--version", action="version", version=f"relaycore {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the relay server")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8787)")
    serve.add_argument("--config", default=None, help="TOML configuration file")
    serve.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"], help="event loop")
    serve.add_argument("--certfile", default=None, help="serve TLS (wss://) with this PEM certificate chain")
    serve.add_argument("--keyfile", default=None, help="the certificate's private key (if not in --certfile)")
    serve.set_defaults(func=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relaycore`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

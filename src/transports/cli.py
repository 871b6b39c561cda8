"""The command line: ``relaycore serve``, in one process or as N workers (``--workers``)."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import NoReturn

import anyio
import msgspec

from relaycore import Config, ConfigError, __version__

from . import check
from ._tools import add_commands
from ._workers import Supervisor, reserve_port
from .logs import configure, fail
from .server import RelayServer

__all__ = ["main"]

log = logging.getLogger("relaycore")


def load_config(path: str | None, env: dict[str, str] | None = None) -> Config:
    """Read the TOML file (if any) and apply ``RELAYCORE_*`` environment overrides."""
    text = Path(path).read_bytes() if path else b""
    return Config.from_toml(text, dict(os.environ) if env is None else env)


def _announce(addresses: Sequence[tuple[str, int]], tls: bool, how: str) -> None:
    """The start-up line, one per address: ``relaycore 0.1.0 listening on ws://...``."""
    for addr_host, addr_port in addresses:
        shown = f"[{addr_host}]" if ":" in addr_host else addr_host
        scheme = "wss" if tls else "ws"
        address = f"{scheme}://{shown}:{addr_port}"
        log.info(
            "relaycore %s listening on %s (%s)",
            __version__,
            address,
            how,
            extra={"event": "listening", "address": address},
        )


async def _serve(server: RelayServer, backend: str, supervisor: socket.socket | None = None) -> None:
    async with anyio.create_task_group() as tg:
        addresses = await tg.start(server.serve)
        _announce(addresses, server.ssl_context is not None, backend)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as waiting:
                waiting.start_soon(_until_signal, signals, waiting.cancel_scope)
                if supervisor is not None:
                    with contextlib.suppress(OSError):  # a supervisor gone: _until_orphaned sees it
                        supervisor.send(b"+")  # ready: listening, and SIGTERM is handled (see _workers)
                    waiting.start_soon(_until_orphaned, supervisor, waiting.cancel_scope)
        server.shutdown()


async def _until_signal(signals: AsyncIterator[signal.Signals], done: anyio.CancelScope) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        log.info("received %s, shutting down", name, extra={"event": "signal", "signal": name})
        break
    done.cancel()


async def _until_orphaned(supervisor: socket.socket, done: anyio.CancelScope) -> None:
    """A worker's lifeline: end-of-file on the supervisor's socket means it died."""
    while True:
        await anyio.wait_readable(supervisor)
        try:
            if not supervisor.recv(64):
                break
        except BlockingIOError:
            continue
        except OSError:
            break
    log.warning("the supervisor is gone, shutting down", extra={"event": "orphaned"})
    done.cancel()


def _missing(module: str) -> bool:
    """Whether an optional dependency is absent."""
    import importlib.util

    return importlib.util.find_spec(module) is None


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
        fail(str(missing))
        return 2
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        fail(str(exc))
        return 2
    host = args.host if args.host is not None else config.server.host
    port = args.port if args.port is not None else config.server.port
    if args.static is not None:
        config.server.static_dir = args.static
    if args.certfile is not None:
        config.server.tls_certfile = args.certfile
    if args.keyfile is not None:
        config.server.tls_keyfile = args.keyfile
    cluster = {
        name: value for name, value in (("redis_url", args.redis), ("node_id", args.node_id)) if value is not None
    }
    try:
        # replace() runs ClusterConfig's own checks, as the file and environment get them.
        config.cluster = msgspec.structs.replace(config.cluster, **cluster)
    except ValueError as exc:
        fail(str(exc))
        return 2
    if config.cluster.redis_url and _missing("coredis"):
        fail("the cluster needs coredis: pip install 'relaycore[redis]'")
        return 2
    if config.metrics.enabled and _missing("prometheus_client"):
        fail("metrics need prometheus-client: pip install 'relaycore[metrics]'")
        return 2
    if args.workers > 1:
        return _cmd_serve_workers(args, config, host, port)
    supervisor = None
    if args.supervisor_fd is not None:
        try:
            supervisor = socket.socket(fileno=args.supervisor_fd)
            supervisor.setblocking(False)
        except OSError as exc:
            fail(f"--supervisor-fd {args.supervisor_fd}: {exc}")
            return 2
    try:
        server = RelayServer(config)
    except ConfigError as exc:  # a static_dir that is not a directory, a TLS key without its certificate
        fail(str(exc))
        return 2
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot load the TLS certificate: {exc}")
        return 2
    try:
        server.bind(host, port, reuse_port=args.reuse_port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
        return 1
    # A second Ctrl-C during the graceful drain stops at once, without a traceback.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(_serve, server, args.backend, supervisor, backend=args.backend)
    log.info("relaycore stopped", extra={"event": "stopped"})
    return 0


def _cmd_serve_workers(args: argparse.Namespace, config: Config, host: str, port: int) -> int:
    """``serve --workers N``: N worker processes on one port, one cluster (see _workers)."""
    count = args.workers
    if not config.cluster.redis_url:
        fail(f"--workers {count} needs a cluster backplane: pass --redis URL (or set [cluster] redis_url)")
        return 2
    if not hasattr(socket, "SO_REUSEPORT"):
        fail(f"--workers {count} needs SO_REUSEPORT, which this system lacks")
        return 2
    base = config.cluster.node_id or secrets.token_hex(4)
    node_ids = [f"{base}-w{index}" for index in range(1, count + 1)]
    try:
        msgspec.structs.replace(config.cluster, node_id=node_ids[-1])  # the longest one
    except ValueError as exc:
        fail(f"{exc} (the workers' node ids are {node_ids[-1]!r} and the like)")
        return 2
    try:
        reserved = reserve_port(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
        return 1
    addresses = [(str(name[0]), int(name[1])) for name in (sock.getsockname() for sock in reserved)]
    command = [sys.executable, "-m", "transports", "--log-level", args.log_level, "--log-format", args.log_format]
    command += ["serve", "--host", host]
    command += ["--port", str(addresses[0][1]), "--backend", args.backend]
    flags = (
        ("--config", args.config),
        ("--certfile", args.certfile),
        ("--keyfile", args.keyfile),
        ("--static", args.static),
    )
    for flag, value in flags:
        if value is not None:
            command += [flag, value]

    def worker(node_id: str, fd: int) -> list[str]:
        return [*command, "--node-id", node_id, "--reuse-port", "--supervisor-fd", str(fd)]

    # The workers read the file and the environment themselves; the Redis URL goes by the
    # environment, not argv, which every local user can read (it may hold a password).
    env = {**os.environ, "RELAYCORE_CLUSTER_REDIS_URL": config.cluster.redis_url}
    supervisor = Supervisor(worker, node_ids, env=env, grace=config.server.shutdown_grace + 5)
    tls = bool(config.server.tls_certfile)
    try:
        status = supervisor.run(lambda: _announce(addresses, tls, f"{args.backend}, {count} workers"))
    except OSError as exc:
        fail(f"cannot start the workers: {exc}")
        return 1
    finally:
        for sock in reserved:
            sock.close()
    if status == 0:
        log.info("relaycore stopped", extra={"event": "stopped"})
    return status


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {count}")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relaycore", description="A WebSocket relay speaking itty-sockets.")
    parser.add_argument("--version", action="version", version=f"relaycore {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one JSON object per line (for collectors)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the relay server")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8787)")
    serve.add_argument("--config", default=None, help="TOML configuration file")
    serve.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"], help="event loop")
    serve.add_argument("--certfile", default=None, help="serve TLS (wss://) with this PEM certificate chain")
    serve.add_argument("--keyfile", default=None, help="the certificate's private key (if not in --certfile)")
    serve.add_argument("--static", default=None, metavar="DIR", help="serve the files in DIR at / (beside the relay)")
    serve.add_argument("--redis", default=None, metavar="URL", help="join the cluster on this Redis (redis://...)")
    serve.add_argument("--node-id", default=None, metavar="ID", help="this relay's name in the cluster")
    serve.add_argument(
        "--workers", type=_worker_count, default=1, metavar="N", help="run N processes on one port (needs --redis)"
    )
    # A worker of --workers N: listen with SO_REUSEPORT, talk to the supervisor on this fd.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(func=_cmd_serve)
    add_commands(sub)
    checker = sub.add_parser("check", help="check any relay against the itty-sockets protocol")
    check.add_arguments(checker)
    checker.set_defaults(func=check.run)
    return parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as ``fail()`` says them: a JSON line when ``--log-format json`` was asked for."""

    #: Set by :func:`main` from the command line before it is parsed (subcommands share it).
    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            configure("info", "json")
            fail(f"{message} (see relaycore --help)")
            sys.exit(2)
        super().error(message)


def _asks_for_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for JSON logs (read before it is known to parse)."""
    return "--log-format=json" in argv or any(
        word == "--log-format" and following == "json" for word, following in itertools.pairwise(argv)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relaycore`` command."""
    _Parser.json_errors = _asks_for_json(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # The workers of --workers N share the supervisor's stderr: their lines carry their pid.
    configure(args.log_level, args.log_format, pid=getattr(args, "supervisor_fd", None) is not None)
    if args.log_format != "json":
        return int(args.func(args))
    try:
        return int(args.func(args))
    except Exception:  # a crash is a JSON line too (type and frames, never its text)
        log.exception("relaycore failed", extra={"event": "crashed"})
        return 1


if __name__ == "__main__":
    sys.exit(main())

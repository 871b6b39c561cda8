"""``relaycore serve``: the native server in one process, or N workers on one port
(``--workers N``, see :mod:`._supervisor`)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Sequence

import anyio
import msgspec

from relaycore import Config, ConfigError, __version__

from .._door import load_config
from ..logs import fail
from ._listeners import reserve_port
from ._server import RelayServer
from ._supervisor import Supervisor

__all__ = ["add_arguments", "run"]

log = logging.getLogger("relaycore")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``relaycore serve``."""
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default 8787)")
    parser.add_argument("--config", default=None, help="TOML configuration file")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"], help="event loop")
    parser.add_argument("--certfile", default=None, help="serve TLS (wss://) with this PEM certificate chain")
    parser.add_argument("--keyfile", default=None, help="the certificate's private key (if not in --certfile)")
    parser.add_argument(
        "--uds", default=None, metavar="PATH", help="listen on this Unix socket instead of --host/--port"
    )
    parser.add_argument("--static", default=None, metavar="DIR", help="serve the files in DIR at / (beside the relay)")
    parser.add_argument("--redis", default=None, metavar="URL", help="join the cluster on this Redis (redis://...)")
    parser.add_argument("--node-id", default=None, metavar="ID", help="this relay's name in the cluster")
    parser.add_argument(
        "--workers", type=_worker_count, default=1, metavar="N", help="run N processes on one port (needs --redis)"
    )
    # A worker of --workers N: listen with SO_REUSEPORT, talk to the supervisor on this fd.
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--supervisor-fd", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run ``relaycore serve`` with its parsed flags until SIGINT or SIGTERM; the exit status."""
    missing = _backend_missing(args.backend)
    if missing is not None:
        fail(str(missing))
        return 2
    config = _config(args)
    if config is None:
        return 2
    host = args.host if args.host is not None else config.server.host
    port = args.port if args.port is not None else config.server.port
    if args.workers > 1:
        if config.server.uds:
            fail(f"--workers {args.workers} shares a TCP port; it cannot listen on a Unix socket (--uds)")
            return 2
        return _serve_workers(args, config, host, port)
    return _serve_one(args, config, host, port)


def _config(args: argparse.Namespace) -> Config | None:
    """The file's configuration with the flags applied, or None once ``fail()`` said why not."""
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        fail(str(exc))
        return None
    if args.static is not None:
        config.server.static_dir = args.static
    if args.uds is not None:
        config.server.uds = args.uds
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
        return None
    if config.cluster.redis_url and _missing("coredis"):
        fail("the cluster needs coredis: pip install 'relaycore[redis]'")
        return None
    if config.metrics.enabled and _missing("prometheus_client"):
        fail("metrics need prometheus-client: pip install 'relaycore[metrics]'")
        return None
    return config


def _serve_one(args: argparse.Namespace, config: Config, host: str, port: int) -> int:
    """One relay process (perhaps a worker of ``--workers N``)."""
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
        if config.server.uds:
            server.bind()
        else:
            server.bind(host, port, reuse_port=args.reuse_port)
    except OSError as exc:
        where = config.server.uds or f"{host}:{port}"
        fail(f"cannot listen on {where}: {exc}")
        return 1
    # A second Ctrl-C during the graceful drain stops at once, without a traceback.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(_serve, server, args.backend, supervisor, backend=args.backend)
    log.info("relaycore stopped", extra={"event": "stopped"})
    return 0


def _serve_workers(args: argparse.Namespace, config: Config, host: str, port: int) -> int:
    """``serve --workers N``: N worker processes on one port, one cluster (see _supervisor)."""
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


def _announce(addresses: Sequence[tuple[str, int]], tls: bool, how: str) -> None:
    """The start-up line, one per address: ``relaycore 0.1.0 listening on ws://...``."""
    for addr_host, addr_port in addresses:
        shown = f"[{addr_host}]" if ":" in addr_host else addr_host
        scheme = "wss" if tls else "ws"
        address = f"unix:{addr_host}" if addr_host.startswith("/") else f"{scheme}://{shown}:{addr_port}"
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
                        supervisor.send(b"+")  # ready: listening, and SIGTERM is handled (see _supervisor)
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


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {count}")
    return count

"""Debian's nginx for the transport tests: a configuration in a temporary directory, a free
port, the process stopped by pid.

::

    with nginx(tmp_path, NGINX_DEFAULTS.format(upstream=f"http://127.0.0.1:{relay.port}")) as port:
        ...  # clients talk to 127.0.0.1:port, nginx to the relay

:func:`process` runs any server the same way (its output to a log, ready when a check says
so, stopped by its process group): the relay in tests/transports/test_uds.py, for one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from redisproc import free_port

from prerequisites import nginx_binary

__all__ = ["NGINX_DEFAULTS", "listening", "nginx", "process"]

STARTUP_TIMEOUT = 10.0

#: The ``location`` a user writes who just puts nginx in front: ``proxy_pass`` and nothing
#: else. Every proxy setting is nginx's default: HTTP/1.0 to the upstream, a new upstream
#: connection per request, and the response buffered (``proxy_buffering on``) unless the
#: upstream's ``X-Accel-Buffering: no`` turns that off for it.
NGINX_DEFAULTS = "location / {{ proxy_pass {upstream}; }}"

_CONF = """\
daemon off;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    {http}
    server {{
        listen 127.0.0.1:{port};
        {locations}
    }}
}}
"""


@contextmanager
def process(command: list[str], log: Path, ready: Callable[[], bool]) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (output to ``log``) until ``ready()`` is true; stop it by pid after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():
            assert proc.poll() is None, f"{command[0]} exited:\n{log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"{command[0]} not ready:\n{log.read_text(errors='replace')}"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def nginx(directory: Path, locations: str, http: str = "") -> Iterator[int]:
    """nginx on a free loopback port with the ``server`` block's ``locations`` (and ``http``:
    more directives of the ``http`` block), its files in ``directory``; yields the port.
    Skipped locally, failed under CI, without nginx (:func:`prerequisites.nginx_binary`)."""
    binary = nginx_binary()
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(_CONF.format(dir=directory, port=port, locations=locations, http=http))
    with process([binary, "-p", str(directory), "-c", str(conf)], directory / "nginx.log", lambda: listening(port)):
        yield port

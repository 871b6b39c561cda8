"""The supervisor of ``relaycore serve --workers N``: N relay processes on one port.

Theory of operation. The supervisor is a plain process that starts, watches and stops
its workers; it serves nobody itself. Each worker is an ordinary ``relaycore serve`` in a
child process (``python -m transports``), which joins the cluster over Redis like any
other node, so N workers are one relay.

The port. The supervisor binds every address of the host ONCE, with ``SO_REUSEPORT``,
and never listens on those sockets. The kernel hands connections to *listening* sockets
only, so none ever waits in the supervisor; yet the port stays reserved for the
supervisor's whole life: port 0 is resolved once, and a worker restarted an hour later
binds the same port, which no other program can take in between. Each worker listens on
that port with ``SO_REUSEPORT`` too (hidden flag ``--reuse-port``), and the kernel spreads
new connections among the workers listening at that moment (evenly on Linux). Two details
keep the reservation honest (see ``reserve_port`` in ``_listeners.py``): a plain bind
first, so that a port another relay (even another supervisor of ours) holds is refused as
a taken port, not shared; and no ``SO_REUSEADDR`` on the reserving sockets, which would
let any program that sets it bind the port while no worker listens.

The channel. Each worker gets one end of a UNIX socket pair (hidden flag
``--supervisor-fd``). The worker writes one byte once it listens and handles SIGTERM,
right after its own "listening" log line; the supervisor logs its line once every worker
has (or 20 s passed), so whoever reads that line can connect at once and reach any
worker. Connecting to the port could not tell which worker answered; the byte is exact.
The same socket is the worker's lifeline: when the supervisor dies, even by SIGKILL, the
worker reads end-of-file and shuts down gracefully rather than hold the port as an orphan.

Signals. Plain ``signal`` + ``subprocess`` + ``selectors``: a supervisor has nothing to do
concurrently, so an event loop (and a backend to pick) would only add machinery. The
handlers do nothing; ``signal.set_wakeup_fd`` writes each signal's number into a pipe
that wakes the one ``select()`` loop, which reads the numbers and acts. SIGCHLD wakes it
when a worker exits, and every wake polls every worker. Workers run in a session of
their own, so a Ctrl-C at the terminal reaches the supervisor alone, which forwards ONE
SIGTERM: a worker that got SIGINT from the terminal and then SIGTERM from the supervisor
would take the second as "stop at once" and skip its graceful drain.

Lifecycle. A worker that exits during the first start, before it is ready, ends the start
(it has printed why: a certificate, the configuration, Redis...; restarting it would only
loop), with its exit status. Afterwards, a worker that exits while the supervisor is not
stopping is restarted after a backoff: 0.5 s, doubling up to 10 s while it keeps dying
within 10 s of its start, back to 0.5 s once one lived 10 s. On SIGTERM or SIGINT every
worker gets SIGTERM, and SIGKILL if it has not exited within ``grace`` seconds (or at a
second signal).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

__all__ = ["Supervisor", "Worker", "next_backoff"]

log = logging.getLogger("relaycore")

#: How long the first start waits for every worker to be ready before it logs anyway.
READY_WAIT = 20.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
#: A worker that lived this long was healthy: its next restart waits BACKOFF_FIRST again.
STABLE_AFTER = 10.0
#: The loop wakes at least this often, whatever happens (a signal cannot be missed, but
#: a poll costs nothing).
IDLE_WAKE = 1.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def next_backoff(previous: float, lived: float) -> float:
    """Seconds before restarting a worker that lived ``lived`` s; ``previous``: the last delay (0: none).

    >>> [next_backoff(last, lived=1.0) for last in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    >>> next_backoff(10.0, lived=STABLE_AFTER)
    0.5
    """
    if previous and lived < STABLE_AFTER:
        return min(previous * 2, BACKOFF_MAX)
    return BACKOFF_FIRST


class Worker:
    """One worker slot: its number, and the process running in it (None while it waits)."""

    __slots__ = ("backoff", "channel", "index", "node_id", "process", "ready", "restart_at", "started")

    def __init__(self, index: int, node_id: str) -> None:
        self.index = index
        self.node_id = node_id
        self.process: subprocess.Popen[bytes] | None = None
        #: The supervisor's end of the socket pair (None once the worker closed its end).
        self.channel: socket.socket | None = None
        #: The worker said it listens.
        self.ready = False
        #: When the process started, and when the next one may (monotonic seconds).
        self.started = 0.0
        self.restart_at = 0.0
        #: The last restart's delay (0: no restart yet).
        self.backoff = 0.0

    def describe(self) -> str:
        pid = self.process.pid if self.process is not None else "-"
        return f"worker {self.index} (pid {pid})"


class Supervisor:
    """Runs ``command(node_id, fd)`` once per node id, restarts them, stops them on a signal.

    ``command`` returns the argv of one worker, given its node id and the descriptor of
    its end of the channel; ``env`` is the workers' environment. :meth:`run` blocks until
    SIGTERM or SIGINT and returns the exit status.
    """

    def __init__(
        self,
        command: Callable[[str, int], list[str]],
        node_ids: Sequence[str],
        *,
        env: dict[str, str],
        grace: float,
    ) -> None:
        self.command = command
        self.env = env
        self.grace = grace
        self.workers = [Worker(index, node_id) for index, node_id in enumerate(node_ids, 1)]
        #: Workers restarted so far.
        self.restarts = 0
        self._selector = selectors.DefaultSelector()
        #: Signal numbers arrive here (``signal.set_wakeup_fd``) while :meth:`run` runs.
        self._wakeup: socket.socket | None = None
        self._stopping: signal.Signals | None = None
        self._hurry = False  # a second stop signal: kill now

    def run(self, announce: Callable[[], None]) -> int:
        """Start the workers, call ``announce()`` once all are ready, serve until a signal."""
        try:
            with self._signals():
                try:
                    for worker in self.workers:
                        self._spawn(worker)
                    status = self._start_up()
                    if status is None:
                        announce()
                        self._watch()
                finally:
                    self._stop_all()
        finally:
            for worker in self.workers:
                self._forget(worker)
            self._selector.close()
        return status or 0

    # -- the phases ----------------------------------------------------------------------

    def _start_up(self) -> int | None:
        """Wait (bounded) until every worker is ready; an exit status if the start failed."""
        deadline = time.monotonic() + READY_WAIT
        while not all(worker.ready for worker in self.workers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                late = ", ".join(w.describe() for w in self.workers if not w.ready)
                log.warning("%s not ready after %g s; going on", late, READY_WAIT, extra={"event": "worker.late"})
                return None
            exited = self._wait(min(remaining, IDLE_WAKE))
            if self._stopping is not None:
                return 0
            for worker in exited:
                code = _exit_code(worker)
                log.error(
                    "%s exited with %s during start-up",
                    worker.describe(),
                    _status(code),
                    extra={"event": "worker.failed", "worker": worker.index},
                )
                return code if code in (1, 2) else 1
        return None

    def _watch(self) -> None:
        """Restart workers that exit, until a stop signal."""
        while self._stopping is None:
            now = time.monotonic()
            for worker in self.workers:
                if worker.process is None and worker.restart_at <= now:
                    self._restart(worker)
            due = [w.restart_at - now for w in self.workers if w.process is None]
            for worker in self._wait(min([IDLE_WAKE, *due])):
                if self._stopping is None:
                    self._schedule(worker)

    def _stop_all(self) -> None:
        """SIGTERM every worker; SIGKILL those still running after the grace period."""
        for worker in self._running():
            _signal(worker, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self._running() and not self._hurry:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wait(min(remaining, IDLE_WAKE))
        for worker in self._running():
            log.warning(
                "%s did not stop in time; killing it",
                worker.describe(),
                extra={"event": "worker.killed", "worker": worker.index},
            )
            _signal(worker, signal.SIGKILL)
        for worker in self.workers:
            if worker.process is not None:
                worker.process.wait()

    # -- one worker ----------------------------------------------------------------------

    def _spawn(self, worker: Worker) -> None:
        mine, theirs = socket.socketpair()
        try:
            worker.process = subprocess.Popen(
                self.command(worker.node_id, theirs.fileno()),
                env=self.env,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # the terminal's Ctrl-C is for the supervisor
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        mine.setblocking(False)
        worker.channel = mine
        worker.ready = False
        worker.started = time.monotonic()
        self._selector.register(mine, selectors.EVENT_READ, worker)

    def _restart(self, worker: Worker) -> None:
        try:
            self._spawn(worker)
        except OSError as exc:  # fork failed (out of memory, of processes): try again later
            log.error(
                "cannot start worker %d: %s",
                worker.index,
                exc,
                extra={"event": "worker.failed", "worker": worker.index},
            )
            worker.started = time.monotonic()
            self._schedule(worker)
            return
        self.restarts += 1
        log.info(
            "%s started (restart %d)",
            worker.describe(),
            self.restarts,
            extra={"event": "worker.started", "worker": worker.index},
        )

    def _schedule(self, worker: Worker) -> None:
        """The worker's process ended: forget it, and restart after the backoff."""
        now = time.monotonic()
        worker.backoff = next_backoff(worker.backoff, now - worker.started)
        worker.restart_at = now + worker.backoff
        if worker.process is not None:
            code = _exit_code(worker)
            log.warning(
                "%s exited with %s; restarting in %g s",
                worker.describe(),
                _status(code),
                worker.backoff,
                extra={"event": "worker.exited", "worker": worker.index},
            )
        self._forget(worker)

    def _forget(self, worker: Worker) -> None:
        self._close_channel(worker)
        if worker.process is not None and worker.process.poll() is not None:
            worker.process = None

    def _close_channel(self, worker: Worker) -> None:
        if worker.channel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.channel)
            worker.channel.close()
            worker.channel = None

    def _heard(self, worker: Worker) -> None:
        """The worker wrote (it is ready) or closed its end (it is exiting)."""
        assert worker.channel is not None
        try:
            data = worker.channel.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_channel(worker)  # SIGCHLD follows; the poll will see the exit
        elif not worker.ready:
            worker.ready = True
            log.info("%s ready", worker.describe(), extra={"event": "worker.ready", "worker": worker.index})

    def _running(self) -> list[Worker]:
        return [w for w in self.workers if w.process is not None and w.process.poll() is None]

    # -- waiting -------------------------------------------------------------------------

    def _wait(self, timeout: float) -> list[Worker]:
        """Wait up to ``timeout`` s for a signal or a worker's word; the workers that exited.

        An exited worker stays in its slot (and in this list) until the caller forgets it.
        """
        for key, _ in self._selector.select(max(timeout, 0.0)):
            if key.data is None:
                self._signalled()
            else:
                self._heard(key.data)
        return [w for w in self.workers if w.process is not None and w.process.poll() is not None]

    def _signalled(self) -> None:
        assert self._wakeup is not None
        with contextlib.suppress(BlockingIOError):
            for signum in self._wakeup.recv(512):
                if signum not in _STOP_SIGNALS:
                    continue  # SIGCHLD: the poll that follows sees the exit
                name = signal.Signals(signum).name
                if self._stopping is None:
                    self._stopping = signal.Signals(signum)
                    log.info(
                        "received %s, stopping %d workers",
                        name,
                        len(self.workers),
                        extra={"event": "signal", "signal": name},
                    )
                elif not self._hurry:
                    self._hurry = True
                    log.info("received %s again, killing the workers", name, extra={"event": "signal", "signal": name})

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Route SIGTERM, SIGINT and SIGCHLD into the select() loop while the block runs."""
        wakeup, wakeup_in = socket.socketpair()
        self._wakeup = wakeup
        wakeup.setblocking(False)
        wakeup_in.setblocking(False)
        self._selector.register(wakeup, selectors.EVENT_READ, None)
        watched = (*_STOP_SIGNALS, signal.SIGCHLD)
        previous_fd = signal.set_wakeup_fd(wakeup_in.fileno(), warn_on_full_buffer=False)
        previous = {signum: signal.signal(signum, _noted) for signum in watched}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            self._selector.unregister(wakeup)
            wakeup.close()
            wakeup_in.close()
            self._wakeup = None


def _noted(signum: int, frame: object) -> None:
    """Signal handler: nothing; ``set_wakeup_fd`` has told the loop already."""


def _exit_code(worker: Worker) -> int:
    assert worker.process is not None and worker.process.returncode is not None
    return worker.process.returncode


def _status(code: int) -> str:
    """``status 1``, or the name of the signal that ended a process (``SIGKILL``)."""
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def _signal(worker: Worker, signum: signal.Signals) -> None:
    if worker.process is not None and worker.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.process.pid, signum)

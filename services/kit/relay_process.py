"""A worker's outbox relay in a child process instead of a thread.

A relay thread shares the worker's interpreter lock: in the scoring worker, which publishes a
score message for every county-year and prefecture a batch moves, its producer's Python took
about a quarter of the process's throughput (docs/performance.md). As a child process it runs
on another core.

`RelayProcess` has the relay's interface (`run(stop)`, `close()`), so `kit.consumer.run_worker`
runs it on a thread as it would the relay itself. It starts `python -m <module>`, whose `main`
calls `serve_child` with the relay it builds:
- the child dies with the worker (Linux `PR_SET_PDEATHSIG`, SIGKILL), as a thread would: a
  restarted worker never finds its old relay still publishing (on SQLite a second relay would
  send rows twice);
- a child that ends on its own is started again after a wait that doubles up to 30 s; on stop it
  gets SIGTERM and marks what it published before it exits;
- what it publishes is counted on the worker's /metrics (`kaohe_outbox_published_total`) from
  lines it writes on a pipe; the backlog gauges are the worker's own reads of the database.
"""

import ctypes
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading

import orjson

from services.kit import metrics
from services.kit.outbox import Relay

log = logging.getLogger(__name__)
REPORT_FD = "KAOHE_RELAY_REPORT_FD"  # the child writes {"topic": n, ...} lines here
PARENT = "KAOHE_RELAY_PARENT"  # the worker's pid: the child exits at once if it is gone already
PR_SET_PDEATHSIG = 1


class RelayProcess:
    """Runs `python -m <module>` as this process's relay. `relay`: the relay this process would
    have run itself; here only its gauges count (read from the database) and its service name."""

    def __init__(self, module: str, relay: Relay, *, first_wait: float = 1.0, max_wait: float = 30.0) -> None:
        self.module, self.service = module, relay.service
        self.relay = relay  # never run here: kept for the gauges it registered (database reads)
        self.first_wait, self.max_wait = first_wait, max_wait
        self.process: subprocess.Popen | None = None
        self.started = 0  # children started so far

    def run(self, stop: threading.Event) -> None:
        wait = self.first_wait
        while not stop.is_set():
            code = self._run_child(stop)
            if stop.is_set():
                return
            log.warning("%s relay process ended (exit code %s); starting it again in %.1f s", self.service, code, wait)
            stop.wait(wait)
            wait = min(wait * 2, self.max_wait)

    def _run_child(self, stop: threading.Event) -> int | None:
        """Start one child, count what it reports until it ends or `stop` is set; its exit code."""
        read, write = os.pipe()
        try:
            self.process = subprocess.Popen([sys.executable, "-m", self.module], pass_fds=(write,),
                                            env={**os.environ, REPORT_FD: str(write), PARENT: str(os.getpid())})
        except OSError:
            os.close(read)
            raise
        finally:
            os.close(write)
        self.started += 1
        pending = b""
        # a selector (epoll on Linux), not select.select: that refuses a descriptor numbered 1024 or
        # more, and a process with many open files then lost every report (the suite's process had)
        with os.fdopen(read, "rb", buffering=0) as pipe, selectors.DefaultSelector() as ready:
            ready.register(pipe, selectors.EVENT_READ)
            while True:
                if stop.is_set() and self.process.poll() is None:
                    self.process.send_signal(signal.SIGTERM)  # it marks what it published, then exits
                    try:
                        self.process.wait(30)
                    except subprocess.TimeoutExpired:
                        self.process.kill()
                if not ready.select(0.2):
                    continue
                chunk = pipe.read(65536)
                if not chunk:  # the child closed its end: it is gone
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._count(line)
        return self.process.wait()

    def _count(self, line: bytes) -> None:
        try:
            counts = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("%s relay process wrote %r, not a count", self.service, line[:100])
            return
        for topic, n in counts.items():
            metrics.OUTBOX_PUBLISHED.labels(self.service, topic).inc(n)

    def close(self) -> None:
        """The child is gone once `run` returns; this makes sure of it (a `run` that never started)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when its parent ends; exits now if that happened already.
    (Elsewhere the child outlives a killed worker until it next fails to report, then stops.)"""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(f"relay: the worker {parent} that started it is gone")


def serve_child(relay: Relay) -> None:
    """The child's main loop: publish until SIGTERM or SIGINT, reporting each batch's counts on the
    pipe the parent gave (`REPORT_FD`)."""
    die_with_parent(int(os.environ[PARENT]))
    pipe = os.fdopen(int(os.environ[REPORT_FD]), "wb", buffering=0)
    stop = threading.Event()

    def write(counts: dict[str, int]) -> None:
        try:
            pipe.write(orjson.dumps(counts) + b"\n")
        except OSError:  # the worker is gone (where no death signal ended this process first)
            stop.set()

    relay.on_published = write
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        relay.run(stop)
    finally:
        relay.close()
        pipe.close()


__all__ = ["RelayProcess", "die_with_parent", "serve_child"]

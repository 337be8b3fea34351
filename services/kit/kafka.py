"""Kafka plumbing over kafka-python: producer, topic creation, and a cheap protocol-level probe."""

import logging
import socket
import struct
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import DefaultPartitioner, murmur2

log = logging.getLogger(__name__)


class KeyedPartitioner(DefaultPartitioner):
    """kafka-python's default partitioner (the Java client's: murmur2 of the key over the sorted
    partitions), with each key's hash kept: our keys are region codes, a few thousand, and the pure
    Python murmur2 was a few per cent of a relay's CPU. A message without a key goes as before."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        if serialized_key is None:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self.MAX_KEYS:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7fffffff
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        return sorted(partitions)[hashed % len(partitions)]


def producer(bootstrap_servers: str, **overrides) -> KafkaProducer:
    """A producer that only reports success once every in-sync replica has the message.

    Idempotence plus one request in flight keeps each partition in send order across retries,
    which is what keeps one county's events in order.
    """
    config = dict(
        bootstrap_servers=bootstrap_servers.split(","),
        client_id="kaohe",
        acks="all",
        enable_idempotence=True,
        max_in_flight_requests_per_connection=1,
        linger_ms=2,
        batch_size=256 * 1024,
        # fail a batch within ~10 s of an outage, so the relay notices, backs off and rebuilds
        # its producer (a restarted broker may need its topics re-created)
        request_timeout_ms=5_000,
        delivery_timeout_ms=10_000,
        max_block_ms=10_000,
        retry_backoff_ms=200,
        partitioner=KeyedPartitioner(),
    )
    config.update(overrides)
    return KafkaProducer(**config)


def ensure_topics(bootstrap_servers: str, names: Iterable[str], partitions: int, replication: int = 1) -> list[str]:
    """Create the topics that are missing; returns the ones created. Existing topics are left alone."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="kaohe-admin",
                             request_timeout_ms=10_000)
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        created = []
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, partitions, replication)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process won the race
        if created:
            log.info("created topics %s with %d partitions", created, partitions)
        return created
    finally:
        admin.close()


def _api_versions_request(correlation_id: int) -> bytes:
    client = b"kaohe-probe"
    # RequestHeader v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client)) + client
    return struct.pack(">i", len(body)) + body


def probe(bootstrap_servers: str, timeout: float = 1.0) -> str | None:
    """None if some bootstrap broker answers an ApiVersions request, else why not.

    A raw protocol round trip: cheap enough for every /readyz, and it proves a Kafka broker
    (not just an open port) is there.
    """
    errors = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=timeout) as sock:
                sock.settimeout(timeout)
                sock.sendall(_api_versions_request(7))
                header = _recv_exactly(sock, 4)
                (size,) = struct.unpack(">i", header)
                response = _recv_exactly(sock, min(size, 4096)) if size >= 6 else b""
                if len(response) >= 6 and struct.unpack(">i", response[:4])[0] == 7:
                    (error_code,) = struct.unpack(">h", response[4:6])
                    if error_code == 0:
                        return None
                    errors.append(f"{server}: ApiVersions error {error_code}")
                else:
                    errors.append(f"{server}: unexpected answer")
        except (OSError, ValueError, struct.error) as exc:
            errors.append(f"{server}: {exc}")
    return "; ".join(errors) or "no bootstrap servers"


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ValueError("connection closed")
        buf += chunk
    return buf


class CachedProbe:
    """`probe()` remembered for a few seconds, so a burst of /readyz calls costs one round trip."""

    def __init__(self, bootstrap_servers: str, ttl: float = 2.0) -> None:
        self.bootstrap_servers, self.ttl = bootstrap_servers, ttl
        self._at, self._result = 0.0, "not probed yet"

    def __call__(self) -> str | None:
        now = time.monotonic()
        if now - self._at > self.ttl:
            self._result, self._at = probe(self.bootstrap_servers), now
        return self._result


__all__ = ["CachedProbe", "KafkaError", "ensure_topics", "probe", "producer"]

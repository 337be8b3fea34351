"""The producers' partitioner keeps each key's hash and still places every keyed message where
kafka-python's default partitioner (the Java client's murmur2) does: a county's messages stay on
the partition every consumer and earlier release expects. Pure logic: a stand-in for the
producer's cluster metadata (the relays' tests publish through it over the real broker)."""

import random

from kafka.partitioner.default import DefaultPartitioner

from services.kit.kafka import KeyedPartitioner


class Cluster:
    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions.get(topic, set())


def test_keyed_messages_go_where_the_default_partitioner_puts_them():
    rng = random.Random(7)
    keys = [f"{rng.randrange(110000, 660000):06d}".encode() for _ in range(3000)] + [b"", b"x" * 37]
    cluster = Cluster({f"t{n}": set(rng.sample(range(40), n)) for n in (1, 3, 6, 12)})
    default, keyed = DefaultPartitioner(), KeyedPartitioner()
    for _ in range(2):  # the second round from the kept hashes
        for topic in cluster.topics():
            placed = [keyed.partition(topic, k, k, None, None, cluster) for k in keys]
            assert placed == [default.partition(topic, k, k, None, None, cluster) for k in keys]
    assert len(keyed._hashes) == len(set(keys))


def test_the_kept_hashes_are_bounded_and_a_message_without_a_key_still_gets_a_partition():
    keyed, cluster = KeyedPartitioner(), Cluster({"t": {0, 1, 2}})
    keyed.MAX_KEYS = 10
    for i in range(25):
        keyed.partition("t", None, str(i).encode(), None, None, cluster)
        assert len(keyed._hashes) <= 10
    assert {keyed.partition("t", None, None, None, None, cluster) for _ in range(50)} <= {0, 1, 2}

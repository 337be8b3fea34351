"""Reading a topic back in tests (real broker, no consumer group: assign + seek to the start)."""

import time
from collections.abc import Callable

import orjson
from kafka import KafkaConsumer, TopicPartition

# A group join with tansu lasts about the rebalance timeout, max_poll_interval_ms (5 s by default).
# A worker a test runs in a thread, whose polls are short, joins in about a second with these.
QUICK_GROUP = {"consumer_max_poll_interval_ms": 1000, "consumer_session_timeout_ms": 2000}


def read_messages(bootstrap: str, topic: str, until: Callable[[list], bool], timeout: float = 30.0) -> list:
    """Every message of `topic` from the beginning, polling until `until(messages)` holds."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        assert partitions, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        messages: list = []
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300, max_records=5000).values():
                messages.extend(batch)
            if until(messages):
                return messages
        raise AssertionError(f"{topic}: condition not met within {timeout}s ({len(messages)} messages read)")
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, *, until_ids: set[str], timeout: float = 30.0) -> list:
    """Every message of an event topic, until all `until_ids` (event ids) were seen."""
    def seen_all(messages: list) -> bool:
        return until_ids <= {orjson.loads(m.value)["event_id"] for m in messages}

    return read_messages(bootstrap, topic, seen_all, timeout)


def headers(message) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers}

"""Reading a topic back in tests (real broker, no consumer group: assign + seek to the start)."""

import time

import orjson
from kafka import KafkaConsumer, TopicPartition


def read_topic(bootstrap: str, topic: str, *, until_ids: set[str], timeout: float = 30.0) -> list:
    """Every message of `topic` from the beginning, until all `until_ids` (event ids) were seen."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=500)
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        assert partitions, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        messages, seen = [], set()
        while not until_ids <= seen and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300, max_records=5000).values():
                for m in batch:
                    messages.append(m)
                    seen.add(orjson.loads(m.value)["event_id"])
        missing = until_ids - seen
        assert not missing, f"{len(missing)} events never arrived on {topic}"
        return messages
    finally:
        consumer.close()


def headers(message) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers}

"""kit.broker.LocalBroker: the local broker (tansu) as make run starts it."""

import pytest
from kafka import KafkaProducer

from services.events import topics
from services.kit.broker import LocalBroker, free_port

pytestmark = pytest.mark.broker


def test_a_broker_started_again_holds_every_topic_with_the_configured_partitions():
    """tansu keeps nothing across a restart and creates a topic that any client names first with 4
    partitions: the producer below would get 4 if the broker had not created the topics itself."""
    broker = LocalBroker(free_port(), partitions=3).start()
    try:
        broker.stop()
        broker.start()  # empty again
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        try:
            for topic in topics.every():
                assert producer.partitions_for(topic) == {0, 1, 2}, topic
        finally:
            producer.close()
    finally:
        broker.stop()

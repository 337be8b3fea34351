"""kit.consumer.group_consumer: how the services' group consumers are configured."""

import pytest

from services.kit.consumer import group_consumer
from services.kit.settings import Settings

pytestmark = pytest.mark.broker


def test_the_broker_may_hold_a_fetch_only_as_long_as_the_setting_says(broker, monkeypatch):
    """kafka-python's default (500 ms) put up to half a second into every consumer hop on the local
    broker (docs/performance.md, freshness): the services' consumers use the setting (50 ms)."""
    monkeypatch.delenv("KAOHE_CONSUMER_FETCH_MAX_WAIT_MS", raising=False)
    assert Settings().consumer_fetch_max_wait_ms == 50
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, consumer_fetch_max_wait_ms=37)
    consumer = group_consumer(settings, group="kaohe-test-fetch-wait", topics=["kaohe.test.fetch-wait"], batch=10,
                              on_assigned=lambda partitions: None)
    try:
        assert consumer.config["fetch_max_wait_ms"] == 37
    finally:
        consumer.close()

"""kit.consumer.group_consumer: how the services' group consumers are configured; kit.consumer.leave."""

import logging

import pytest
from kafka.errors import KafkaTimeoutError, NodeNotReadyError

from services.kit.consumer import group_consumer, leave
from services.kit.settings import Settings


@pytest.mark.broker
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


class _Closing:
    """A consumer whose close logs what kafka-python's logs when the LeaveGroup is not answered."""

    config = {"group_id": "kaohe-test"}

    def __init__(self, error: Exception) -> None:
        self.error, self.closed_with = error, None

    def close(self, **kwargs) -> None:
        self.closed_with = kwargs
        logging.getLogger("kafka.coordinator").error("LeaveGroup request failed: %s", self.error)


def test_leave_waits_a_bounded_time_and_tells_an_unanswered_leave_as_info(caplog):
    """tansu answered a LeaveGroup of the running stack after 3-5 s and kafka-python waited up to
    30 s: every stop of `make run` took 6 s. The wait is bounded, and its timeout is not an ERROR."""
    consumer = _Closing(KafkaTimeoutError("Timed out after 1000 ms"))
    with caplog.at_level(logging.INFO):
        leave(consumer, timeout_ms=1234)
    assert consumer.closed_with == {"timeout_ms": 1234}
    assert [(r.name, r.levelname) for r in caplog.records] == [("services.kit.consumer", "INFO")]
    assert "kaohe-test" in caplog.records[0].getMessage() and "1234 ms" in caplog.records[0].getMessage()


def test_leave_keeps_every_other_error_of_the_leave(caplog):
    consumer = _Closing(NodeNotReadyError("coordinator gone"))
    with caplog.at_level(logging.INFO):
        leave(consumer)
    assert [(r.name, r.levelname) for r in caplog.records] == [("kafka.coordinator", "ERROR")]
    assert logging.getLogger("kafka.coordinator").filters == []  # the filter is gone after the close

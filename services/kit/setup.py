"""What every service's set-up step does: migrate its own database, then create its topics."""

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine

from services.kit.db import service_engine
from services.kit.kafka import ensure_topics
from services.kit.migrate import upgrade
from services.kit.settings import Settings

T = TypeVar("T")


def set_up(settings: Settings, service: str, topics: list[str], then: Callable[[Engine], T] | None = None
           ) -> T | None:
    """Bring `service`'s database (or schema) to its head, run `then` on it (e.g. load reference
    data), and create `topics` where missing; returns what `then` returned."""
    engine = service_engine(settings, service)
    try:
        upgrade(service, engine, settings.database(service)[1])
        result = then(engine) if then is not None else None
    finally:
        engine.dispose()
    ensure_topics(settings.bootstrap_servers, topics, settings.topic_partitions)
    return result


__all__ = ["set_up"]

"""`python -m services.notify.setup`: migrate notify's database and create the topics it reads."""

from services.kit.db import service_engine
from services.kit.kafka import ensure_topics
from services.kit.logs import configure
from services.kit.migrate import upgrade
from services.kit.settings import Settings
from services.notify.notifications import TOPICS
from services.notify.worker import DEAD_LETTERS


def setup(settings: Settings) -> None:
    engine = service_engine(settings, "notify")
    try:
        upgrade("notify", engine, settings.database("notify")[1])
    finally:
        engine.dispose()
    ensure_topics(settings.bootstrap_servers, [*TOPICS, *DEAD_LETTERS], settings.topic_partitions)


def main() -> None:
    configure()
    setup(Settings())
    print("notify: migrated", flush=True)


if __name__ == "__main__":
    main()

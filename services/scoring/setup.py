"""`python -m services.scoring.setup`: migrate scoring's database and create its topics."""

from services.events import topics
from services.kit.db import service_engine
from services.kit.kafka import ensure_topics
from services.kit.logs import configure
from services.kit.migrate import upgrade
from services.kit.settings import Settings


def setup(settings: Settings) -> None:
    engine = service_engine(settings, "scoring")
    try:
        upgrade("scoring", engine, settings.database("scoring")[1])
    finally:
        engine.dispose()
    ensure_topics(settings.bootstrap_servers, [topics.SCORING_SCORES, topics.dead_letter(topics.SCORING_SCORES)],
                  settings.topic_partitions)


def main() -> None:
    configure()
    setup(Settings())
    print("scoring: migrated", flush=True)


if __name__ == "__main__":
    main()

"""`python -m services.ranking.setup`: migrate ranking's database and create its topics."""

from services.events import topics
from services.kit.db import service_engine
from services.kit.kafka import ensure_topics
from services.kit.logs import configure
from services.kit.migrate import upgrade
from services.kit.settings import Settings


def setup(settings: Settings) -> None:
    engine = service_engine(settings, "ranking")
    try:
        upgrade("ranking", engine, settings.database("ranking")[1])
    finally:
        engine.dispose()
    ensure_topics(settings.bootstrap_servers, [topics.RANKING_STANDINGS, topics.dead_letter(topics.SCORING_SCORES)],
                  settings.topic_partitions)


def main() -> None:
    configure()
    setup(Settings())
    print("ranking: migrated", flush=True)


if __name__ == "__main__":
    main()

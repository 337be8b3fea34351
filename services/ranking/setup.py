"""`python -m services.ranking.setup`: migrate ranking's database and create its topics."""

from services.events import topics
from services.kit.logs import configure
from services.kit.settings import Settings
from services.kit.setup import set_up


def setup(settings: Settings) -> None:
    set_up(settings, "ranking", [topics.RANKING_STANDINGS, topics.dead_letter(topics.SCORING_SCORES)])


def main() -> None:
    configure()
    setup(Settings())
    print("ranking: migrated", flush=True)


if __name__ == "__main__":
    main()

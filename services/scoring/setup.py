"""`python -m services.scoring.setup`: migrate scoring's database and create its topics."""

from services.events import topics
from services.kit.logs import configure
from services.kit.settings import Settings
from services.kit.setup import set_up


def setup(settings: Settings) -> None:
    set_up(settings, "scoring", [topics.SCORING_SCORES, topics.dead_letter(topics.SCORING_SCORES)])


def main() -> None:
    configure()
    setup(Settings())
    print("scoring: migrated", flush=True)


if __name__ == "__main__":
    main()

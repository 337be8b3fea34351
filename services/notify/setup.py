"""`python -m services.notify.setup`: migrate notify's database and create the topics it reads."""

from services.kit.logs import configure
from services.kit.settings import Settings
from services.kit.setup import set_up
from services.notify.notifications import TOPICS
from services.notify.worker import DEAD_LETTERS


def setup(settings: Settings) -> None:
    set_up(settings, "notify", [*TOPICS, *DEAD_LETTERS])


def main() -> None:
    configure()
    setup(Settings())
    print("notify: migrated", flush=True)


if __name__ == "__main__":
    main()

"""`python -m services.scoring.relay`: scoring's outbox relay (score messages, dead letters), run by
the scoring worker as its child process (services/kit/relay_process.py), not on its own."""

from services.events import topics
from services.kit.db import service_engine
from services.kit.logs import configure
from services.kit.outbox import Relay
from services.kit.relay_process import serve_child
from services.kit.settings import Settings
from services.scoring.base import Outbox


def build(settings: Settings, db) -> Relay:
    return Relay.from_settings(settings, db, Outbox, [topics.SCORING_SCORES, topics.dead_letter(topics.INTAKE_EVENTS)])


def main() -> None:
    configure()
    settings = Settings()
    serve_child(build(settings, service_engine(settings, "scoring")))


if __name__ == "__main__":
    main()

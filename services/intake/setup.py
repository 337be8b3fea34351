"""`python -m services.intake.setup`: migrate intake's database, load regions, create topics.

Idempotent: run at every start. Regions already present (and statuses set by events) are kept.
"""

import logging

from sqlmodel import Session

from services.events import topics
from services.intake.regions.service import load
from services.kit.db import service_engine
from services.kit.kafka import ensure_topics
from services.kit.logs import configure
from services.kit.migrate import upgrade
from services.kit.settings import Settings

log = logging.getLogger("services.intake.setup")


def setup(settings: Settings) -> int:
    engine = service_engine(settings, "intake")
    try:
        upgrade("intake", engine, settings.database("intake")[1])
        with Session(engine) as session:
            added = load(session=session)
            session.commit()
    finally:
        engine.dispose()
    ensure_topics(settings.bootstrap_servers, [topics.INTAKE_EVENTS, topics.dead_letter(topics.INTAKE_EVENTS)],
                  settings.topic_partitions)
    return added


def main() -> None:
    configure()
    added = setup(Settings())
    print(f"intake: migrated; regions {'added: ' + str(added) if added else 'already loaded'}", flush=True)


if __name__ == "__main__":
    main()

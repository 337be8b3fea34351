"""`python -m services.intake.setup`: migrate intake's database, load regions, create topics.

Regions: the shipped Sichuan data, or the file KAOHE_REGIONS_FILE names (same shape).

Idempotent: run at every start. Regions already present (and statuses set by events) are kept.
"""

import logging

from sqlmodel import Session

from services.events import topics
from services.intake.regions.service import load, regions_file
from services.kit.logs import configure
from services.kit.settings import Settings
from services.kit.setup import set_up

log = logging.getLogger("services.intake.setup")


def setup(settings: Settings) -> int:
    data = regions_file(settings.regions_file) if settings.regions_file else None  # default: Sichuan, shipped

    def load_regions(engine) -> int:
        with Session(engine) as session:
            added = load(session=session, data=data)
            session.commit()
        return added

    return set_up(settings, "intake", [topics.INTAKE_EVENTS, topics.dead_letter(topics.INTAKE_EVENTS)],
                  then=load_regions)


def main() -> None:
    configure()
    added = setup(Settings())
    print(f"intake: migrated; regions {'added: ' + str(added) if added else 'already loaded'}", flush=True)


if __name__ == "__main__":
    main()

"""`python -m services.intake.relay`: publish intake's outbox to Kafka (its own process)."""

import logging
import signal
import threading

from services.events import topics
from services.intake.base import Outbox
from services.kit import metrics
from services.kit.db import service_engine
from services.kit.logs import configure
from services.kit.outbox import Relay
from services.kit.settings import Settings

log = logging.getLogger("services.intake.relay")


def build(settings: Settings, engine=None) -> Relay:
    return Relay.from_settings(settings, engine or service_engine(settings, "intake"), Outbox,
                               [topics.INTAKE_EVENTS, topics.dead_letter(topics.INTAKE_EVENTS)])


def main() -> None:
    configure()
    settings = Settings()
    relay = build(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = metrics.serve_for(settings, "intake-relay")
    log.info("relaying intake outbox to %s", settings.bootstrap_servers)
    try:
        relay.run(stop)
    finally:
        relay.close()
        metrics.stop(server)
        log.info("relay stopped")


if __name__ == "__main__":
    main()

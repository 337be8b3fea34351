"""Logging set-up for every entry point."""

import logging
import os


def configure() -> None:
    logging.basicConfig(level=os.environ.get("KAOHE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("kafka", "httpx", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

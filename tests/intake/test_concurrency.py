"""Appends from many connections at once: gap-free sequences and an intact chain."""

import threading
from datetime import datetime, timezone

from sqlmodel import Session

from services.events import registry
from services.intake.regions.service import Directory
from services.intake.store import service as store
from tests import factories as f


def test_concurrent_appends_are_serialised(database):
    directory = Directory(database.engine)
    clock = lambda: datetime(2026, 6, 1, tzinfo=timezone.utc)  # noqa: E731
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for _ in range(n):
                with Session(database.engine) as session:
                    store.append(session=session, event=registry.parse(f.daily_check()), directory=directory,
                                 clock=clock)
                    session.commit()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(25,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    report = store.verify(database.engine)
    assert report.ok, report.first_broken
    assert report.events_checked == report.head_sequence == 150

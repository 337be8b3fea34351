"""Kit fixtures: a migrated SQLite intake database with the regions (fast: no PostgreSQL run)."""

from collections.abc import Iterator

import pytest
from sqlmodel import Session

from services.intake.regions.service import load
from tests.conftest import Database, fresh_database


@pytest.fixture
def sqlite_intake(tmp_path) -> Iterator[Database]:
    with fresh_database("sqlite", tmp_path, "intake") as db:
        with Session(db.engine) as session:
            load(session=session)
            session.commit()
        yield db

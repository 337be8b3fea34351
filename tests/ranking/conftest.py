"""Ranking's database for a test, on each backend, with the shipped regions saved."""

import pytest
from sqlmodel import Session

from services.intake.regions.service import shipped_regions
from services.ranking import store
from tests.conftest import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def ranking_db(request, tmp_path):
    with fresh_database(request.param, tmp_path, "ranking") as db:
        with Session(db.engine) as s:
            store.save_regions(s, shipped_regions()["regions"])
            s.commit()
        yield db

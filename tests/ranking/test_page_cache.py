"""The standings API serves a rendered page until the standings change, looking for a change at
most every `VERSION_TTL_S` (no database round trip per read between)."""

from datetime import datetime, timezone

from fastapi.testclient import TestClient
from sqlmodel import Session

from services.kit.settings import Settings
from services.ranking import store
from services.ranking.api import routes
from services.ranking.app import create_app

AT = datetime(2026, 5, 1, 2, 0, tzinfo=timezone.utc)


def scored(db, code: str, total: float, message_id: int) -> None:
    batch = store.Batch()
    batch.add(store.ScoreMessage(code, 2026, "county", "in_poverty", total, "good", "{}", message_id, AT))
    with Session(db.engine) as s:
        store.write(s, batch, AT)
        s.commit()


def test_a_page_is_served_as_rendered_until_the_next_look_for_a_change(ranking_db, tmp_path, access, monkeypatch):
    settings = Settings(data_dir=tmp_path, service_token=access.admin)
    scored(ranking_db, "513431", 90.0, 1)
    with TestClient(create_app(settings, engine=ranking_db.engine), headers=access.headers) as api:
        def page() -> list[tuple[str, int]]:
            r = api.get("/v1/standings", params={"region": "513400", "year": 2026})
            assert r.status_code == 200, r.text
            return [(i["region_code"], i["rank"]) for i in r.json()["items"]]

        monkeypatch.setattr(routes, "VERSION_TTL_S", 3600.0)
        assert page() == [("513431", 1)]
        scored(ranking_db, "513432", 95.0, 2)
        assert page() == [("513431", 1)]  # looked for a change less than VERSION_TTL_S ago: as rendered
        monkeypatch.setattr(routes, "VERSION_TTL_S", 0.0)
        assert page() == [("513432", 1), ("513431", 2)]  # looked again: the new standings
        scored(ranking_db, "513433", 99.0, 3)
        assert page() == [("513433", 1), ("513432", 2), ("513431", 3)]


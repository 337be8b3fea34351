"""kit.app.service_app: what an app makes for itself, it closes at shutdown."""

import os
from pathlib import Path

from fastapi.testclient import TestClient

from services.scoring.app import create_app
from tests.conftest import fresh_database


def open_files_under(folder: Path) -> list[str]:
    """This process's open descriptors on files under `folder`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_the_access_store_an_app_made_is_closed_with_it(tmp_path, settings, access):
    """An app per test had left the access database's files open (three or four descriptors each:
    over a thousand by the middle of the suite, past what select() takes)."""
    access.engine.dispose()  # the fixture's own connections: only the app's are counted
    with fresh_database("sqlite", tmp_path, "scoring") as db:
        app = create_app(settings, engine=db.engine)  # its access store from the settings: access.db
        with TestClient(app, headers=access.headers) as client:
            assert client.get("/v1/policies").status_code == 200  # a key looked up in access.db
            assert any(name.endswith("access.db") for name in open_files_under(tmp_path))
        assert not [name for name in open_files_under(tmp_path) if "access.db" in name]

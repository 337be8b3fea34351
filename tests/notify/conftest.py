"""Notify fixtures: a fresh notify database (SQLite and PostgreSQL), fast settings, the API with
real API keys, a dispatcher thread and a loopback receiver."""

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.kit.broker import free_port
from services.kit.settings import Settings
from services.notify.app import create_app
from services.notify.delivery import Dispatcher
from tests.conftest import bearer, fresh_database
from tests.notify.receiver import Receiver

FAST = dict(notify_allow_private_urls=True, notify_timeout_s=1.0, notify_retry_schedule_s=[0, 0.3, 0.6, 0.9],
            notify_retry_jitter=0.0, notify_poll_ms=20, notify_tick_s=0.2, notify_concurrency=4)


@pytest.fixture(params=["sqlite", "postgresql"])
def notify_db(request, tmp_path):
    with fresh_database(request.param, tmp_path, "notify") as db:
        yield db


def fast_settings(tmp_path, **overrides) -> Settings:
    values = {"data_dir": tmp_path, "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", **FAST, **overrides}
    return Settings(**values)


@pytest.fixture
def notify_settings(tmp_path) -> Settings:
    return fast_settings(tmp_path)


class Api:
    """The notify API in-process, with a `webhooks:manage` key of prefecture 513400 (Liangshan)."""

    def __init__(self, client: TestClient, access) -> None:
        self.client, self.access = client, access
        self.headers = bearer(access.key(["webhooks:manage"], "513400"))

    def key(self, region: str, scopes=("webhooks:manage",)) -> dict[str, str]:
        return bearer(self.access.key(list(scopes), region))

    def register(self, url: str, headers: dict[str, str] | None = None, **body) -> dict:
        r = self.client.post("/v1/webhooks/endpoints", json={"url": url, **body}, headers=headers or self.headers)
        assert r.status_code == 201, r.text
        return r.json()

    def call(self, method: str, path: str, expect: int = 200, headers=None, **kwargs) -> dict:
        r = self.client.request(method, f"/v1/webhooks/endpoints{path}", headers=headers or self.headers, **kwargs)
        assert r.status_code == expect, r.text
        return r.json() if r.content else {}


def make_api(settings: Settings, db, access) -> Iterator[Api]:
    with TestClient(create_app(settings, engine=db.engine, access=access.store)) as client:
        yield Api(client, access)


@pytest.fixture
def api(notify_settings, notify_db, access) -> Iterator[Api]:
    yield from make_api(notify_settings, notify_db, access)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Running:
    """A dispatcher on its own thread (as the worker runs it)."""

    def __init__(self, settings: Settings, db) -> None:
        self.dispatcher = Dispatcher(settings, db.engine)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.dispatcher.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.dispatcher.close()


@pytest.fixture
def dispatcher(notify_settings, notify_db) -> Iterator[Running]:
    running = Running(notify_settings, notify_db)
    yield running
    running.close()

"""Shared fixtures: a real broker, a real database (SQLite and PostgreSQL), an intake app."""

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session

from alembic import command
from bench.regions import national_regions
from services.intake.app import create_app
from services.intake.regions.service import load
from services.kit.access import Access
from services.kit.broker import LocalBroker, free_port
from services.kit.db import make_engine
from services.kit.migrate import alembic_config, upgrade
from services.kit.settings import Settings

PG_URL = os.environ.get("KAOHE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_reason() -> str | None:
    """None if PostgreSQL is reachable, else why not (the skip message)."""
    engine = make_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL not reachable at {PG_URL} ({str(exc).splitlines()[0]}); PostgreSQL tests skipped"
    finally:
        engine.dispose()


_PG_REASON = _postgres_reason()


@dataclass
class Database:
    backend: str
    url: str
    schema: str | None
    engine: Engine


@contextmanager
def fresh_database(backend: str, tmp_path, service: str, *, migrated: bool = True) -> Iterator[Database]:
    """A new SQLite file or a new PostgreSQL schema, migrated to `service`'s head (`migrated=False`:
    empty, for a migration test to take step by step); dropped after."""
    if backend == "postgresql":
        if _PG_REASON:
            pytest.skip(_PG_REASON)
        schema = f"t_{uuid.uuid4().hex[:12]}"
        db = Database("postgresql", f"{PG_URL}?options=-csearch_path%3D{schema}", schema,
                      make_engine(PG_URL, schema=schema))
    else:
        url = f"sqlite:///{tmp_path / f'{service}.db'}"
        db = Database("sqlite", url, None, make_engine(url))
    if migrated:
        upgrade(service, db.engine, db.schema)
    try:
        yield db
    finally:
        db.engine.dispose()
        if db.schema:
            cleanup = make_engine(PG_URL)
            with cleanup.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE'))
                conn.commit()
            cleanup.dispose()


def migrate(service: str, db: Database, target: str, *, down: bool = False) -> None:
    """`service`'s Alembic up (or `down`) to `target`, e.g. "0002_notify" or "notify@head"."""
    cfg = alembic_config(service)
    with db.engine.connect() as conn:
        cfg.attributes["connection"], cfg.attributes["schema"] = conn, db.schema
        (command.downgrade if down else command.upgrade)(cfg, target)
        conn.commit()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Iterator[Database]:
    """A fresh, migrated intake database with the regions loaded."""
    with fresh_database(request.param, tmp_path, "intake") as db:
        with Session(db.engine) as session:
            load(session=session)
            session.commit()
        yield db


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """A real tansu broker on a free port for the whole session."""
    with LocalBroker(free_port()) as b:
        yield b


class Clock:
    """A settable clock; tests pin "now" so deadlines and future checks are deterministic."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2027, 1, 10, tzinfo=timezone.utc))


class Keys:
    """The access database of a test (SQLite under tmp_path, where Settings(data_dir=tmp_path) looks;
    or `engine`, one already migrated) with a province-wide admin key; `key()` makes others."""

    def __init__(self, tmp_path, engine: Engine | None = None) -> None:
        if engine is None:
            engine = make_engine(f"sqlite:///{tmp_path / 'access.db'}")
            upgrade("access", engine)
        self.engine = engine
        self.store = Access(self.engine)
        self.admin = self.key(["admin"], "510000", name="test admin")
        self.headers = bearer(self.admin)

    def key(self, scopes: list[str], region: str, *, name: str = "test key", rate_limit_per_min: int = 10**7) -> str:
        return self.store.create(name=name, scopes=scopes, region=region, rate_limit_per_min=rate_limit_per_min)[1]


@contextmanager
def access_database(backend: str, folder: Path) -> Iterator[Keys]:
    """An access database of its own on `backend` (API keys and idempotency records), with its admin key."""
    folder.mkdir(exist_ok=True)
    with fresh_database(backend, folder, "access") as db:
        yield Keys(folder, engine=db.engine)


def idempotency_records(engine: Engine) -> list[dict]:
    """Every row of the idempotency_record table, as stored."""
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(text("SELECT * FROM idempotency_record"))]


def two_provinces() -> dict:
    """Two provinces of the national set: Hebei (generated) and Sichuan (shipped)."""
    data = national_regions()
    return {**data, "regions": [r for r in data["regions"] if r["code"][:2] in ("13", "51")]}


def two_provinces_file(folder: Path) -> tuple[Path, list[dict], dict]:
    """`two_provinces()` written as a KAOHE_REGIONS_FILE; its regions; an exited Hebei county."""
    regions = two_provinces()["regions"]
    path = folder / "two-provinces.json"
    path.write_bytes(orjson.dumps({"regions": regions}))
    return path, regions, next(r for r in regions if r["code"].startswith("13") and r.get("status") == "exited")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def access(tmp_path) -> Iterator[Keys]:
    keys = Keys(tmp_path)
    yield keys
    keys.engine.dispose()


@pytest.fixture
def settings(tmp_path, access) -> Settings:
    # A bootstrap address nobody listens on: tests that need Kafka use the `broker` fixture.
    return Settings(data_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                    service_token=access.admin)


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this test alone (it may be stopped, frozen or restarted)."""
    b = LocalBroker(free_port()).start()
    yield b
    if b.process.poll() is None:
        os.kill(b.process.pid, signal.SIGCONT)
    b.stop()


@pytest.fixture
def client(database, settings, clock) -> Iterator[TestClient]:
    app = create_app(settings, engine=database.engine, clock=clock)
    with TestClient(app, headers=bearer(settings.service_token)) as c:
        yield c


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The chaos rows a test recorded travel in its report: with `make test`'s processes
    (pytest-xdist) the test ran in another process than the one that prints the table."""
    from tests.chaos import report

    outcome = yield
    outcome.get_result().user_properties.extend(("chaos_row", asdict(row)) for row in report.drain())


_CHAOS_ROWS: list = []


def pytest_runtest_logreport(report) -> None:
    from tests.chaos.report import Row

    _CHAOS_ROWS.extend(Row(**value) for name, value in report.user_properties if name == "chaos_row")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The chaos table (tests/chaos/report.py), when any fault-injection scenario ran."""
    from tests.chaos import report

    if _CHAOS_ROWS:
        terminalreporter.section("chaos: events sent, lost, double-counted, recovery time")
        terminalreporter.write_line(report.table(_CHAOS_ROWS))
        report.save(_CHAOS_ROWS, Path(config.rootpath) / "var" / "chaos.json")

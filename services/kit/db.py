"""Engines and metadata (the request's session, for the APIs: `kit.session`)."""

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, TypeDecorator, create_engine, event, text
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_base(name: str) -> type[SQLModel]:
    """A SQLModel base with the service's own metadata, so services share no tables."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION, info={"service": name})
    base = type(f"{name.title()}Model", (SQLModel,), {}, registry=registry(metadata=metadata))
    return base


def normalise_url(url: str) -> str:
    """postgresql:// → the psycopg 3 driver; everything else as given."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, schema: str | None = None, **kwargs: Any) -> Engine:
    """An engine tuned per backend; `schema` pins PostgreSQL's search_path to one service."""
    url = normalise_url(url)
    connect_args: dict[str, Any] = kwargs.pop("connect_args", {})
    if url.startswith("sqlite"):
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 40)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30, **connect_args},
                               **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if schema:
        connect_args["options"] = f"-csearch_path={schema}"
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)


def service_engine(settings: Any, service: str) -> Engine:
    """The engine of `service`'s own database, as the settings place it."""
    url, schema = settings.database(service)
    return make_engine(url, schema=schema)


BUSY_TIMEOUT_MS = 30_000  # SQLite: how long a writer waits for the file's write lock


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the one writer. FULL syncs the WAL on every commit, so an
    # answered write survives a power loss too; group commit keeps that to one sync per group.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


class Busy(Exception):
    """The database cannot take this write now (overload or outage): 503 with Retry-After."""


class UTCDateTime(TypeDecorator):
    """Timestamps stored as UTC on every backend and read back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store aware datetimes only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

"""Alembic environment shared by every service; `service` picks the metadata and database."""

import importlib

from sqlalchemy import text

from alembic import context
from services.kit.db import make_engine
from services.kit.settings import Settings

config = context.config
service = config.attributes.get("service") or context.get_x_argument(as_dictionary=True).get("service")
if not service:
    raise SystemExit("choose a service: alembic -x service=intake upgrade intake@head")
# API keys and idempotency records ("access") are kit's, shared by every service's API
_tables = "services.kit.access.tables" if service == "access" else f"services.{service}.tables"
target_metadata = importlib.import_module(_tables).metadata


def _run(connection, schema: str | None) -> None:
    if schema and connection.dialect.name == "postgresql":
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs need table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection, config.attributes.get("schema"))
else:
    url, schema = Settings().database(service)
    engine = make_engine(url, schema=schema)
    with engine.connect() as conn:
        _run(conn, schema)
    engine.dispose()

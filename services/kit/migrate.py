"""Apply a service's Alembic migrations: the only way any schema is created."""

from pathlib import Path

from alembic.config import Config
from sqlalchemy import Engine

from alembic import command

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(service: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["service"] = service
    return cfg


def upgrade(service: str, engine: Engine, schema: str | None = None) -> None:
    """Bring `service`'s database (or PostgreSQL schema) to the head of its branch."""
    cfg = alembic_config(service)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["schema"] = schema
        command.upgrade(cfg, f"{service}@head")
        conn.commit()

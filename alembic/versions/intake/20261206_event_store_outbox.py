"""the event store is intake's outbox: a published position instead of an outbox row per event

Every accepted event was stored twice: as its `event` row and as an `outbox` row holding the same
record for the relay. Appends are serialised and commit in sequence order, so the relay can read
the events themselves past a position it stores (`published`, one row). Each event row gets the
`request_id` of the request that sent it (its message carries it, as the outbox row's headers did).

Upgrade: the position is just before the first event whose outbox row was not sent yet (their
request ids are copied onto the events), else the head; then `outbox` is dropped. A message that
was published but not marked sent is published again, as after any relay restart (consumers drop
a copy by event id).

Downgrade: `outbox` again, with an unsent row for each event past the position (the record as the
relay sends it), then `published` and the column go.

Revision ID: 0004_intake
Revises: 0003_intake
Create Date: 2026-12-06 16:00:00
"""
from collections.abc import Sequence

import orjson
import sqlalchemy as sa

from alembic import op
from services.events import registry
from services.kit.db import UTCDateTime

revision: str = "0004_intake"
down_revision: str | None = "0003_intake"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOPIC = "kaohe.intake.events.v1"
_outbox = sa.table("outbox", sa.column("id", sa.BigInteger), sa.column("topic", sa.String),
                   sa.column("key", sa.String), sa.column("value", sa.LargeBinary), sa.column("headers", sa.Text),
                   sa.column("created_at", UTCDateTime()), sa.column("sent_at", UTCDateTime()))
_event = sa.table("event", sa.column("sequence", sa.BigInteger), sa.column("event_id", sa.Uuid),
                  sa.column("type", sa.String), sa.column("schema_version", sa.Integer),
                  sa.column("recorded_at", UTCDateTime()), sa.column("region_code", sa.String),
                  sa.column("body", sa.Text), sa.column("request_id", sa.String))
_published = sa.table("published", sa.column("id", sa.Integer), sa.column("sequence", sa.BigInteger))


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))
    op.create_table("published",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("sequence", sa.BigInteger(), nullable=False),
                    sa.PrimaryKeyConstraint("id", name=op.f("pk_published")))
    unsent = [orjson.loads(h) for h in bind.execute(
        sa.select(_outbox.c.headers).where(_outbox.c.sent_at.is_(None)).order_by(_outbox.c.id)).scalars()]
    unsent = [h for h in unsent if str(h.get("sequence", "")).isdigit()]
    if unsent:
        position = min(int(h["sequence"]) for h in unsent) - 1
        ids = [{"s": int(h["sequence"]), "r": h["request_id"]} for h in unsent if h.get("request_id")]
        if ids:
            bind.execute(_event.update().where(_event.c.sequence == sa.bindparam("s"))
                         .values(request_id=sa.bindparam("r")), ids)
    else:
        position = bind.execute(sa.text("SELECT sequence FROM chain_head WHERE id = 1")).scalar_one()
    bind.execute(_published.insert().values(id=1, sequence=position))
    op.drop_table("outbox")  # with its index


def downgrade() -> None:
    bind = op.get_bind()
    op.create_table("outbox",
                    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                              nullable=False),
                    sa.Column("topic", sa.String(length=200), nullable=False),
                    sa.Column("key", sa.String(length=200), nullable=False),
                    sa.Column("value", sa.LargeBinary(), nullable=False),
                    sa.Column("headers", sa.Text(), nullable=False),
                    sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
                    sa.Column("sent_at", UTCDateTime(timezone=True), nullable=True),
                    sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_unsent", ["id"], unique=False, sqlite_where=sa.text("sent_at IS NULL"),
                              postgresql_where=sa.text("sent_at IS NULL"))
    position = bind.execute(sa.select(_published.c.sequence).where(_published.c.id == 1)).scalar_one()
    while True:  # the events not published yet, as the outbox rows the relay of 0003 sends
        rows = bind.execute(sa.select(_event).where(_event.c.sequence > position)
                            .order_by(_event.c.sequence).limit(5000)).all()
        if not rows:
            break
        bind.execute(_outbox.insert(), [{
            "topic": TOPIC, "key": r.region_code, "created_at": r.recorded_at, "sent_at": None,
            "value": registry.encode_record(r.sequence, r.recorded_at, orjson.loads(r.body)),
            "headers": orjson.dumps({**({"request_id": r.request_id} if r.request_id else {}),
                                     "event_id": str(r.event_id), "type": r.type,
                                     "schema_version": str(r.schema_version), "sequence": str(r.sequence)}).decode(),
        } for r in rows])
        position = rows[-1].sequence
    op.drop_table("published")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_column("request_id")

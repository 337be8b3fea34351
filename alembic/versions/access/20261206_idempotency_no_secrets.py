"""idempotency records saved before secrets were kept out of them lose their token or secret

Until kit.access.ShownOnce, a POST /v1/keys, POST /v1/webhooks/endpoints or .../rotate-secret sent
with an Idempotency-Key was saved whole: the plaintext API token (`"token": "kh_..."`) or webhook
signing secret (`"secret": "whsec_..."`) sat in idempotency_record for a day or more. Those
fields become null, as the code now saves them (a replay then answers without the secret and
names it in Idempotent-Redacted). No schema change; there is nothing to put back on downgrade.

Revision ID: 0002_access
Revises: 0001_access
Create Date: 2026-12-06 05:00:00
"""
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_access"
down_revision: str | None = "0001_access"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SECRETS = {"token": "kh_", "secret": "whsec_"}  # field -> how its value starts
record = sa.table("idempotency_record", sa.column("key_id", sa.String), sa.column("idempotency_key", sa.String),
                  sa.column("headers", sa.Text), sa.column("body", sa.LargeBinary))


def _scrubbed(headers: str | None, body: bytes) -> tuple[str, bytes] | None:
    """The row's headers and body without its secrets, or None if it holds none."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    found = [f for f, prefix in SECRETS.items() if isinstance(data.get(f), str) and data[f].startswith(prefix)]
    if not found:
        return None
    saved = json.loads(headers or "[]") + [["idempotent-redacted", ", ".join(found)]]
    return json.dumps(saved), json.dumps({**data, **dict.fromkeys(found)}, ensure_ascii=False).encode()


def upgrade() -> None:
    conn = op.get_bind()
    # read in Python, not filtered with LIKE: a BLOB/bytea LIKE is neither portable nor reliable on
    # SQLite with non-ASCII bodies; the table holds two days of answers at most
    found = []
    for row in conn.execute(sa.select(record).where(record.c.body.is_not(None))).yield_per(1000):
        scrubbed = _scrubbed(row.headers, bytes(row.body))
        if scrubbed is not None:
            found.append({"k": row.key_id, "i": row.idempotency_key, "h": scrubbed[0], "b": scrubbed[1]})
    if found:
        conn.execute(record.update()
                     .where(record.c.key_id == sa.bindparam("k"), record.c.idempotency_key == sa.bindparam("i"))
                     .values(headers=sa.bindparam("h"), body=sa.bindparam("b")), found)


def downgrade() -> None:
    pass  # the secrets are gone, as they should be

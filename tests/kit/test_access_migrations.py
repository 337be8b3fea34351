"""Access's migrations move what is stored: 0002 takes the tokens and webhook secrets out of the
idempotency records saved before ShownOnce, on both backends, and leaves every other record as it was."""

from datetime import datetime, timezone

import orjson
import pytest
from sqlalchemy import insert

from alembic import command
from services.kit.access.tables import IdempotencyRecord
from services.kit.migrate import alembic_config
from tests.conftest import fresh_database, idempotency_records

AT = datetime(2026, 12, 5, 12, tzinfo=timezone.utc)
TOKEN, SECRET = "kh_0123456789abcdef_Zm9vYmFyYmF6cXV4cXV1eA-_", "whsec_c2VjcmV0IG9mIGEgd2ViaG9vayBlbmRwb2ludA=="
JSON = [["content-type", "application/json"]]


def _record(idem: str, status: int, body: bytes) -> dict:
    return {"key_id": "k1", "idempotency_key": idem, "fingerprint": "f" * 64, "created_at": AT, "locked_until": None,
            "status": status, "headers": orjson.dumps(JSON).decode(), "body": body}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0002_takes_the_secrets_out_of_saved_idempotency_records(backend, tmp_path):
    with fresh_database(backend, tmp_path, "access") as db:
        cfg = alembic_config("access")
        with db.engine.connect() as conn:  # back to the records as 0001 saved them
            cfg.attributes["connection"], cfg.attributes["schema"] = conn, db.schema
            command.downgrade(cfg, "0001_access")
            key = b'{"id":"0123456789abcdef","name":"\xe5\x87\x89\xe5\xb1\xb1","token":"' + TOKEN.encode() + b'"}'
            endpoint = b'{"id":"ep_1","url":"https://x.example/","secret":"' + SECRET.encode() + b'"}'
            untouched = {"event": b'{"event_id":"e1","sequence":7}', "problem": b'{"type":"x","token":"not-a-key"}',
                         "text": b"kh_ not json"}
            conn.execute(insert(IdempotencyRecord.__table__), [
                _record("key", 201, key), _record("endpoint", 201, endpoint),
                *(_record(idem, 200, body) for idem, body in untouched.items())])
            command.upgrade(cfg, "access@head")
            conn.commit()
        rows = {r["idempotency_key"]: r for r in idempotency_records(db.engine)}
    assert orjson.loads(rows["key"]["body"]) == {"id": "0123456789abcdef", "name": "凉山", "token": None}
    assert orjson.loads(rows["endpoint"]["body"]) == {"id": "ep_1", "url": "https://x.example/", "secret": None}
    assert orjson.loads(rows["key"]["headers"]) == [*JSON, ["idempotent-redacted", "token"]]
    assert orjson.loads(rows["endpoint"]["headers"]) == [*JSON, ["idempotent-redacted", "secret"]]
    for idem, body in untouched.items():
        assert bytes(rows[idem]["body"]) == body and orjson.loads(rows[idem]["headers"]) == JSON
    for row in rows.values():
        assert not any(s.split("_", 1)[1].encode() in bytes(row["body"]) for s in (TOKEN, SECRET))

"""`Idempotency-Key` on POST: a retried request gets the first one's response, never a second effect.

Per API key: the same key with the same request (method, path, query and body) → the saved
response, marked `Idempotent-Replayed: true`; with a different request → 422; while the first is
still running → 409. Outcomes are kept at least 24 h (purged after `RETENTION`). Responses that
say nothing happened (401, 403, 408, 409, 429, 5xx) are not saved, so a retry runs again. If a
process dies mid-request its claim lapses after `LOCK`, and a retry runs again.

A secret a route shows once (an API key's token, a webhook signing secret) is never saved: the
route declares it with `ShownOnce`, the saved copy holds null in its place, and a replay answers
the same status and object with that field null, naming it in `Idempotent-Redacted`. Retrying is
still safe (no second key is made) and the caller learns which object the first request made; the
secret itself exists only in the first answer, as the README promises.
"""

import hashlib
import itertools
from datetime import timedelta

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.kit.access.dependency import principal_for, rate_limited
from services.kit.access.keys import Access
from services.kit.access.tables import IdempotencyRecord
from services.kit.problems import MEDIA_TYPE, TYPE_PREFIX

HEADER = "idempotency-key"
RETENTION = timedelta(hours=48)
LOCK = timedelta(minutes=5)
MAX_SAVED_BODY = 1024 * 1024
NOT_SAVED = {401, 403, 408, 409, 425, 429}
DROPPED_HEADERS = {b"content-length", b"date", b"server", b"ratelimit", b"ratelimit-policy", b"retry-after"}
SHOWN_ONCE = "kaohe.shown_once"  # scope key: the response fields ShownOnce keeps out of the saved copy
REDACTED = "idempotent-redacted"
REPLAY_HEADERS = {  # for the OpenAPI of a route with ShownOnce
    "Idempotent-Replayed": {"description": "`true`: the saved answer to an earlier request with this "
                                           "Idempotency-Key; nothing was done again", "schema": {"type": "string"}},
    "Idempotent-Redacted": {"description": "In a replay: the fields shown only in the first answer (secrets, "
                                           "never saved), null here", "schema": {"type": "string"}},
}


class ShownOnce:
    """A route dependency naming top-level response fields that are secrets shown once: the
    Idempotency-Key copy of the answer holds null in their place."""

    def __init__(self, *fields: str) -> None:
        self.fields = fields

    async def __call__(self, request: Request) -> None:
        request.scope[SHOWN_ONCE] = self.fields


class IdempotencyStore:
    def __init__(self, access: Access) -> None:
        self.access = access
        self._calls = itertools.count()

    def begin(self, key_id: str, idem: str, fingerprint: str) -> tuple[str, IdempotencyRecord | None]:
        """("started" | "mismatch" | "running" | "saved", the saved record)."""
        now = self.access.clock()
        with Session(self.access.engine, expire_on_commit=False) as session:
            if next(self._calls) % 1000 == 0:
                session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - RETENTION))
                session.commit()
            try:
                session.add(IdempotencyRecord(key_id=key_id, idempotency_key=idem, fingerprint=fingerprint,
                                              created_at=now, locked_until=now + LOCK))
                session.commit()
                return "started", None
            except IntegrityError:
                session.rollback()
            row = session.execute(select(IdempotencyRecord).where(
                IdempotencyRecord.key_id == key_id, IdempotencyRecord.idempotency_key == idem)).scalar_one()
            expired = row.created_at < now - RETENTION
            if not expired and row.fingerprint != fingerprint:
                return "mismatch", row
            if not expired and row.status is not None:
                return "saved", row
            if not expired and row.locked_until and row.locked_until > now:
                return "running", row
            # expired, or the first request's process died mid-way: claim it (one claimant wins)
            claimed = session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.key_id == key_id, IdempotencyRecord.idempotency_key == idem,
                       IdempotencyRecord.created_at == row.created_at)
                .values(fingerprint=fingerprint, created_at=now, locked_until=now + LOCK, status=None,
                        headers=None, body=None)).rowcount
            session.commit()
            return ("started", None) if claimed else ("running", row)

    def finish(self, key_id: str, idem: str, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        with Session(self.access.engine) as session:
            session.execute(update(IdempotencyRecord)
                            .where(IdempotencyRecord.key_id == key_id, IdempotencyRecord.idempotency_key == idem)
                            .values(status=status, headers=orjson.dumps(headers).decode(), body=body,
                                    locked_until=None))
            session.commit()

    def release(self, key_id: str, idem: str) -> None:
        with Session(self.access.engine) as session:
            session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.key_id == key_id,
                                                            IdempotencyRecord.idempotency_key == idem))
            session.commit()


def fingerprint(scope: Scope, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


async def _problem(send: Send, scope: Scope, status: int, slug: str, title: str, detail: str,
                   **extra) -> None:
    body = orjson.dumps({"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail,
                         "instance": scope.get("path"), **extra})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _header_error(message: str) -> dict:
    return {"field": "Idempotency-Key", "pointer": "/headers/Idempotency-Key", "message": message,
            "type": "value_error"}


class Idempotency:
    """ASGI middleware; sits inside the body limit, reads `app.state.access` for the key store."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.stores: dict[int, IdempotencyStore] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        idem = headers.get(HEADER)
        if idem is None:
            await self.app(scope, receive, send)
            return
        if not (1 <= len(idem) <= 255 and idem.isascii() and idem.isprintable()):
            await _problem(send, scope, 422, "validation", "Invalid request",
                           "Idempotency-Key: 1 to 255 printable ASCII characters",
                           errors=[_header_error("1 to 255 printable ASCII characters")])
            return
        access: Access = scope["app"].state.access
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        principal = await principal_for(access, token) if token else None
        if principal is None:  # the route's dependency answers 401
            await self.app(scope, receive, send)
            return
        if problem := rate_limited(scope, principal):  # a replay, a 409 or a 422 counts as a request too
            await _problem(send, scope, problem.status, problem.slug, problem.title, problem.detail)
            return  # RateHeaders adds the verdict's headers, Retry-After with them
        body = await _read_body(receive)
        store = self.stores.setdefault(id(access), IdempotencyStore(access))
        state, row = await run_in_threadpool(store.begin, principal.key_id, idem, fingerprint(scope, body))
        if state == "mismatch":
            await _problem(send, scope, 422, "idempotency-key-reused", "Idempotency-Key reused",
                           "this Idempotency-Key was used with a different request; use a new key",
                           errors=[_header_error("already used with a different request")])
            return
        if state == "running":
            await _problem(send, scope, 409, "idempotency-key-in-use", "Request in progress",
                           "a request with this Idempotency-Key is still being processed; retry later")
            return
        if state == "saved":
            await _replay(send, row)
            return
        await self._run(scope, body, send, store, principal.key_id, idem)

    async def _run(self, scope: Scope, body: bytes, send: Send, store: IdempotencyStore, key_id: str,
                   idem: str) -> None:
        sent = False

        async def replay_receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        status, saved_headers, chunks, size = 0, [], [], 0

        async def capture(message: Message) -> None:
            nonlocal status, saved_headers, size
            if message["type"] == "http.response.start":
                status = message["status"]
                saved_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
                                 if k.lower() not in DROPPED_HEADERS]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
                if size <= MAX_SAVED_BODY:
                    chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await run_in_threadpool(store.release, key_id, idem)
            raise
        saved: bytes | None = b"".join(chunks)
        keep = bool(status) and status < 500 and status not in NOT_SAVED and size <= MAX_SAVED_BODY
        if keep and scope.get(SHOWN_ONCE):  # the route's secrets never reach the table
            saved, redacted = _without(saved, scope[SHOWN_ONCE])
            keep = saved is not None
            if redacted:
                saved_headers.append((REDACTED, ", ".join(redacted)))
        if keep:
            await run_in_threadpool(store.finish, key_id, idem, status, saved_headers, saved)
        else:
            await run_in_threadpool(store.release, key_id, idem)


def _without(body: bytes, fields: tuple[str, ...]) -> tuple[bytes | None, list[str]]:
    """The body with `fields` null, and the ones that held a value; (None, []) if it is not a JSON
    object, so a body whose secrets cannot be taken out is not saved at all."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, []
    if not isinstance(data, dict):
        return None, []
    redacted = [f for f in fields if data.get(f) is not None]
    if not redacted:
        return body, []
    return orjson.dumps({**data, **dict.fromkeys(redacted)}), redacted


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            return b"".join(chunks)


async def _replay(send: Send, row: IdempotencyRecord) -> None:
    body = row.body or b""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in orjson.loads(row.headers or "[]")]
    headers += [(b"content-length", str(len(body)).encode()), (b"idempotent-replayed", b"true")]
    await send({"type": "http.response.start", "status": row.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""Input no service can store, refused before any route sees it: a JSON body that is not UTF-8
(RFC 8259; Python would otherwise read UTF-16 and UTF-32 too), and NUL (U+0000) in the path, a query
parameter or any string or key of a JSON body (PostgreSQL text cannot hold it: it was a 500, or a
503 a client would retry for ever, on PostgreSQL and stored as is on SQLite)."""

import json
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.kit.problems import MEDIA_TYPE, TYPE_PREFIX

NUL = "\x00"
WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_json(scope: Scope) -> bool:
    """FastAPI reads a body as JSON when it says so, or says nothing."""
    content_type = dict(scope.get("headers") or []).get(b"content-type")
    if not content_type:
        return True
    media = content_type.split(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _error(field: str, pointer: str, message: str, type_: str) -> dict[str, str]:
    return {"field": field, "pointer": pointer, "message": message, "type": type_}


def _nul_in_target(scope: Scope) -> list[dict[str, str]]:
    errors = []
    if NUL in scope.get("path", ""):
        errors.append(_error("path", "/path", "must not contain NUL (U+0000)", "string_nul"))
    query = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if NUL in name or NUL in value:
                name = name.replace(NUL, "\\u0000")
                errors.append(_error(f"query.{name}", f"/query/{name}", "must not contain NUL (U+0000)",
                                     "string_nul"))
    return errors


def _nul_in_json(data: Any) -> list[dict[str, str]]:
    """Every place in a parsed JSON value whose string (or key) holds a NUL; iterative (any depth)."""
    errors = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if NUL in key:
                    errors.append((path + (key,), "a key must not contain NUL (U+0000)"))
                stack.append((path + (key,), item))
        elif isinstance(value, list):
            stack.extend((path + (i,), item) for i, item in enumerate(value))
        elif isinstance(value, str) and NUL in value:
            errors.append((path, "must not contain NUL (U+0000)"))
    return [_error(".".join(str(p).replace(NUL, "\\u0000") for p in path) or "(body)",
                   "".join(f"/{p}" for p in path).replace(NUL, "\\u0000"), message, "string_nul")
            for path, message in sorted(errors, key=lambda e: [str(p) for p in e[0]])]


def body_errors(body: bytes) -> tuple[int, list[dict[str, str]]] | None:
    """(status, errors) for a JSON body no service may take, else None (parse errors are FastAPI's)."""
    try:
        body.decode("utf-8")
        encoded_ok = b"\x00" not in body  # a raw NUL: UTF-16 or UTF-32 (never valid in UTF-8 JSON text)
    except UnicodeDecodeError:
        encoded_ok = False
    if not encoded_ok:
        return 422, [_error("(body)", "", "not UTF-8: JSON must be encoded in UTF-8 (RFC 8259)", "encoding")]
    if b"\\u0000" not in body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None  # FastAPI answers it (json_invalid, or too deep)
    errors = _nul_in_json(data)
    return (422, errors) if errors else None


async def _reject(scope: Scope, send: Send, status: int, errors: list[dict[str, str]]) -> None:
    fields = ", ".join(sorted({e["field"] for e in errors}))
    body = orjson.dumps({"type": TYPE_PREFIX + "validation", "title": "Invalid request", "status": status,
                         "detail": f"invalid fields: {fields}", "instance": scope.get("path"), "errors": errors})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class CleanInput:
    """ASGI middleware, inside the body limit (it reads the whole body, which the limit caps)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors = _nul_in_target(scope)
        if errors:
            await _reject(scope, send, 422, errors)
            return
        if scope["method"] not in WITH_BODY or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        problem = body_errors(body) if body else None
        if problem:
            await _reject(scope, send, *problem)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed

"""Input no service can store, refused before any route sees it: a body sent to a route that takes
JSON under another media type (415: FastAPI would read it as bytes and answer "must be an object"),
a JSON body that is not UTF-8 (RFC 8259; Python would otherwise read UTF-16 and UTF-32 too), and NUL
(U+0000) in the path, a query parameter or any string or key of a JSON body (PostgreSQL text cannot
hold it: it was a 500, or a 503 a client would retry for ever, on PostgreSQL and stored as is on
SQLite). Likewise a lone surrogate (an escape `\\ud800`-`\\udfff` not paired) in a JSON string or
key: valid JSON syntax, but no Unicode text (RFC 8259 8.2), which no UTF-8 store or answer can
carry (an event id sent as one made the batch answer a 500)."""

import json
import re
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.kit.problems import MEDIA_TYPE, TYPE_PREFIX

NUL = "\x00"
SURROGATE = re.compile("[\ud800-\udfff]")  # in a parsed string: one that came unpaired
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # in a body: where one may be (pairs too)
WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACCEPTED = "application/json"  # or application/<anything>+json; UTF-8 (a charset, if given, must say so)
UTF_8 = frozenset({"utf-8", "utf8"})


def _json_media(media: str) -> bool:
    """application/json or application/*+json (`media`: lower case, without parameters)."""
    return media == ACCEPTED or (media.startswith("application/") and media.endswith("+json"))


def _is_json(content_type: str | None) -> bool:
    """A body FastAPI reads as JSON: it says application/json or application/*+json."""
    return bool(content_type) and _json_media(content_type.partition(";")[0].strip().lower())


def media_type_error(content_type: str | None, has_body: bool) -> str | None:
    """Why a request to a route that takes JSON cannot be read as JSON in UTF-8, else None.

    No Content-Type with no body is fine (the route says what it misses); no Content-Type with a
    body is refused: FastAPI would not read it as JSON, and guessing hides a client's bug.
    """
    if content_type is None:
        return f"no Content-Type: send the body as {ACCEPTED}" if has_body else None
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if not _json_media(media):
        return f"{media or 'an empty Content-Type'} is not accepted: send the body as {ACCEPTED}"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in UTF_8:
            return f"charset={charset or '(empty)'} is not accepted: JSON is UTF-8 (RFC 8259), send {ACCEPTED}"
    return None


def _json_routes(app: Any) -> tuple[set[tuple[str, str]], list[tuple[re.Pattern[str], str]]]:
    """(method, path) of every operation that takes a (JSON) body, literal paths and templates
    apart: built once per app from its routes (not from its OpenAPI document, which takes 0.2 s to
    make: a test's app paid it at its first POST)."""
    cached = getattr(app.state, "json_body_routes", None)
    if cached is None:
        literal, templates = set(), []
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            if not isinstance(route, APIRoute) or route.body_field is None:
                continue
            for method in context.methods or ():
                if "{" in context.path:
                    templates.append((re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(context.path))), method))
                else:
                    literal.add((method, context.path))
        cached = app.state.json_body_routes = (literal, templates)
    return cached


def takes_json(scope: Scope) -> bool:
    """Does the route this request goes to take a JSON body? (A literal path wins over a template,
    as in routing: POST /v1/events/batch is not /v1/events/{event_id}.)"""
    app = scope.get("app")
    if app is None or not hasattr(app, "openapi"):
        return True  # not a FastAPI app: every body must be JSON
    literal, templates = _json_routes(app)
    method, path = scope["method"], scope.get("path", "")
    if (method, path) in literal:
        return True
    return any(m == method and pattern.fullmatch(path) for pattern, m in templates)


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
                name = _printable(name)
                errors.append(_error(f"query.{name}", f"/query/{name}", "must not contain NUL (U+0000)",
                                     "string_nul"))
    return errors


def _fault(text: str) -> tuple[str, str] | None:
    """(what, error type) if `text` holds what no store takes: NUL, or a lone surrogate."""
    if NUL in text:
        return "NUL (U+0000)", "string_nul"
    if SURROGATE.search(text):
        return "a lone surrogate (\\ud800-\\udfff unpaired: not Unicode text)", "string_surrogate"
    return None


def _printable(part: Any) -> str:
    """A path part as the error names it: NUL and lone surrogates escaped (the answer is UTF-8)."""
    return SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(part).replace(NUL, "\\u0000"))


def _faults_in_json(data: Any) -> list[dict[str, str]]:
    """Every place in a parsed JSON value whose string (or key) holds a NUL or a lone surrogate;
    iterative (any depth)."""
    errors = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if fault := _fault(key):
                    errors.append((path + (key,), f"a key must not contain {fault[0]}", fault[1]))
                stack.append((path + (key,), item))
        elif isinstance(value, list):
            stack.extend((path + (i,), item) for i, item in enumerate(value))
        elif isinstance(value, str) and (fault := _fault(value)):
            errors.append((path, f"must not contain {fault[0]}", fault[1]))
    return [_error(".".join(map(_printable, path)) or "(body)", "".join(f"/{_printable(p)}" for p in path),
                   message, type_)
            for path, message, type_ in sorted(errors, key=lambda e: [str(p) for p in e[0]])]


def body_errors(body: bytes) -> tuple[int, list[dict[str, str]]] | None:
    """(status, errors) for a JSON body no service may take, else None (parse errors are FastAPI's)."""
    try:
        body.decode("utf-8")
        encoded_ok = b"\x00" not in body  # a raw NUL: UTF-16 or UTF-32 (never valid in UTF-8 JSON text)
    except UnicodeDecodeError:
        encoded_ok = False
    if not encoded_ok:
        return 422, [_error("(body)", "", "not UTF-8: JSON must be encoded in UTF-8 (RFC 8259)", "encoding")]
    if b"\\u0000" not in body and not _ESCAPED_SURROGATE.search(body):
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None  # FastAPI answers it (json_invalid, or too deep)
    errors = _faults_in_json(data)
    return (422, errors) if errors else None


async def _reject(scope: Scope, send: Send, status: int, errors: list[dict[str, str]]) -> None:
    fields = ", ".join(sorted({e["field"] for e in errors}))
    await _send(scope, send, status, {"type": TYPE_PREFIX + "validation", "title": "Invalid request",
                                      "status": status, "detail": f"invalid fields: {fields}", "errors": errors})


async def _unsupported(scope: Scope, send: Send, reason: str) -> None:
    """415, naming the header; Accept-Post/Accept-Patch say what is accepted (RFC 9110 15.5.16)."""
    error = _error("Content-Type", "/headers/Content-Type", reason, "unsupported_media_type")
    problem = {"type": TYPE_PREFIX + "unsupported-media-type", "title": "Unsupported media type", "status": 415,
               "detail": f"Content-Type: {reason}", "accepted": [ACCEPTED, "application/*+json"], "errors": [error]}
    accept = {"POST": b"accept-post", "PATCH": b"accept-patch"}.get(scope["method"])
    await _send(scope, send, 415, problem, [(accept, ACCEPTED.encode())] if accept else [])


async def _send(scope: Scope, send: Send, status: int, problem: dict[str, Any],
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({**problem, "instance": scope.get("path")})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
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
        if scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-type")
        content_type = None if declared is None else declared.decode("latin-1")
        if takes_json(scope):
            has_body = headers.get(b"content-length", b"0") not in (b"0", b"") or b"transfer-encoding" in headers
            reason = media_type_error(content_type, has_body)
            if reason:  # refused before the body is read: the body limit and idempotency never see it
                await _unsupported(scope, send, reason)
                return
        if not _is_json(content_type):
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

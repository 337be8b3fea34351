"""RFC 9457 problem details: every error any service returns, with every offending field named.

`Problem` is raised by code that workers run too (a policy store, a principal's checks): FastAPI is
imported only where a response is made or handlers are installed, so workers do not load it.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SATimeout

from services.events.registry import ValidationError, explain_unknown, field_errors
from services.kit.db import Busy

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:kaohe:problem:"
# scope key: a 422 found before the key check (kit.query), raised by it once the caller is let in
PENDING = "kaohe.pending_problem"


class Problem(Exception):
    """An error a client can act on. `extra` members are added to the problem object."""

    def __init__(self, status: int, slug: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail, self.extra = status, slug, title, detail, extra
        self.headers: dict[str, str] = {}  # response headers (WWW-Authenticate, Retry-After, ...)

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body = {"type": TYPE_PREFIX + self.slug, "title": self.title, "status": self.status, "detail": self.detail}
        if instance:
            body["instance"] = instance
        return {**body, **self.extra}


class InvalidEvent(Problem):
    """A schema error in an event: 422 with the list of fields."""

    def __init__(self, errors: list[dict[str, Any]], detail: str | None = None, event_id: str | None = None) -> None:
        fields = ", ".join(sorted({e["field"] for e in errors}))
        super().__init__(422, "validation", "Invalid request", detail or f"invalid fields: {fields}", errors=errors)
        self.event_id = event_id  # as sent, if it was a string: lets a batch result name the item

    @classmethod
    def from_validation(cls, exc: ValidationError, data: Any) -> "InvalidEvent":
        event_id = data.get("event_id") if isinstance(data, dict) else None
        return cls(field_errors(exc, data), event_id=event_id if isinstance(event_id, str) else None)


def field_problem(field: str, message: str, type_: str = "value_error", status: int = 422) -> Problem:
    """A 422 about one field, in the same shape as schema errors."""
    error = {"field": field, "pointer": "/" + field.replace(".", "/"), "message": message, "type": type_}
    return Problem(status, "validation", "Invalid request", f"{field}: {message}", errors=[error])


def problem_response(problem: Problem, request: Request | None = None, headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(
        problem.body(str(request.url.path) if request else None),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers={**problem.headers, **(headers or {})},
    )


def request_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        where = loc[0] if loc else "body"
        path = [p for p in loc[1:] if not (isinstance(p, str) and "@v" in p)]  # drop union tags
        if where != "body":
            path = [where, *path]  # query/path/header parameters keep their origin
        message = err.get("msg", "")
        if err.get("type") == "json_invalid":  # loc is ("body", position): the body is at fault, not a field "6"
            position = loc[1] if len(loc) > 1 else None
            message = f"not valid JSON ({(err.get('ctx') or {}).get('error', message)} at character {position})"
            path = []
        if err.get("type") == "unknown_event_type":
            where_, message = explain_unknown(exc.body)
            path = list(where_)
        field = ".".join(str(p) for p in path) or "(body)"
        out.append({"field": field, "pointer": "".join(f"/{p}" for p in path), "message": message,
                    "type": err.get("type", "")})
    return out


def _allowed(request: Request) -> list[str]:
    """Every method the API has at this path, from its OpenAPI document (a literal path wins
    over a template: /v1/events/batch is not /v1/events/{event_id})."""
    paths = request.app.openapi().get("paths", {})
    if request.url.path in paths:
        return sorted(m.upper() for m in paths[request.url.path])
    methods: set[str] = set()
    for template, operations in paths.items():
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), request.url.path):
            methods.update(m.upper() for m in operations)
    return sorted(methods)


def _unparsable(cause: BaseException) -> str:
    if isinstance(cause, RecursionError):
        return "JSON nested too deeply"
    if isinstance(cause, UnicodeError):
        return "not UTF-8: JSON must be encoded in UTF-8 (RFC 8259)"
    return f"the body cannot be parsed ({type(cause).__name__})"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return problem_response(InvalidEvent(request_errors(exc)), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        titles = {404: "Not found", 405: "Method not allowed", 413: "Content too large", 415: "Unsupported media type"}
        problem = Problem(exc.status_code, f"http-{exc.status_code}", titles.get(exc.status_code, "HTTP error"),
                          str(exc.detail))
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body
            problem.extra["errors"] = [{"field": "(body)", "pointer": "", "type": "body_unparsable",
                                        "message": _unparsable(exc.__cause__)}]
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names the first matching route's methods only
            headers["Allow"] = ", ".join(_allowed(request))
        return problem_response(problem, request, headers=headers)

    @app.exception_handler(Busy)
    @app.exception_handler(SATimeout)
    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: Exception):
        # overload or an outage is the client's to retry, not a bug: 503, and nothing was stored
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    str(exc).splitlines()[0])
        problem = Problem(503, "unavailable", "Service unavailable",
                          "the database is busy or unreachable; nothing was stored, retry later")
        return problem_response(problem, request, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        problem = Problem(500, "internal", "Internal error", "an unexpected error occurred; it has been logged")
        return problem_response(problem, request)

"""Query parameters a route does not declare are refused, not ignored: `?yaer=2025` would answer
the default year as if it had been asked for. The 422 names each one (`query.<name>`, as FastAPI's
own query errors are named), says which parameters the route takes, and names every declared query
parameter that is invalid too (a typo in a required one: both the typo and the missing name).

Likewise a parameter that takes one value given more than once (`?year=2025&year=2026`): FastAPI
would read the last and ignore the others, whatever they hold.

`refuse_undeclared` is the first dependency of every route of a service app (kit.app). On a route
behind `require(...)` it leaves its problem in the request (problems.PENDING) for the key check to
raise once the caller is let in: a caller without a key still gets the 401, without the scope the
403, as for any other invalid request.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import field_annotation_is_sequence, request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.datastructures import QueryParams

from services.kit.problems import PENDING, InvalidEvent, request_errors

KEY_CHECK = "kaohe_key_check"  # set on the dependency `require(...)` makes: it raises a pending problem


@dataclass(frozen=True, slots=True)
class Takes:
    """What one route takes in its query string."""

    route: str  # "GET /v1/scores/{region_code}"
    names: tuple[str, ...]  # in the order its OpenAPI operation lists them
    fields: tuple[Any, ...]  # FastAPI's fields of those parameters, its dependencies' included
    keyed: bool  # behind require(...): the key check raises the problem once the caller is let in
    single: frozenset[str]  # the names that take one value (not a list)


def _dependants(root: Dependant) -> Iterator[Dependant]:
    """The route's dependant and every dependency's, depth first (the order FastAPI documents them in)."""
    stack = [root]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.dependencies))


def declared(route: str, dependant: Dependant) -> Takes:
    """What a route declares, its dependencies' parameters included (the stream's `access_token`)."""
    fields: dict[str, Any] = {}
    keyed = False
    for current in _dependants(dependant):
        for field in current.query_params:
            fields.setdefault(field.alias, field)  # one dependency used twice declares its parameters once
        keyed = keyed or getattr(current.call, KEY_CHECK, False)
    single = frozenset(name for name, field in fields.items()
                       if not field_annotation_is_sequence(field.field_info.annotation))
    return Takes(route, tuple(fields), tuple(fields.values()), keyed, single)


def _routes(app: Any) -> dict[int, Takes]:
    """id(route) -> what it takes (an APIRoute is not hashable); built once per app, at its first
    request with a query string (its routers are all included by then)."""
    table = getattr(app.state, "query_takes", None)
    if table is None:
        table = {}
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            if isinstance(route, APIRoute):
                label = f"{'|'.join(sorted(context.methods or ()))} {context.path}"
                table[id(route)] = declared(label, context.dependant)
        app.state.query_takes = table
    return table


def _pointer_token(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")  # RFC 6901


def refused(takes: Takes, query: QueryParams) -> InvalidEvent | None:
    """The 422 for the names in `query` that the route does not declare, or that take one value and
    were given more (with what is wrong with the other declared ones), else None."""
    unknown = [name for name in query.keys() if name not in takes.names]
    repeated = {}  # looked for only when the query holds more pairs than names
    if len(query.multi_items()) > len(query):
        repeated = {name: n for name in query.keys() if name in takes.single and (n := len(query.getlist(name))) > 1}
    if not unknown and not repeated:
        return None
    offer = f"takes {', '.join(takes.names)}" if takes.names else "takes no query parameters"
    _values, invalid = request_params_to_args(takes.fields, query)
    errors = [e for e in request_errors(RequestValidationError(invalid))
              if e["field"].removeprefix("query.") not in repeated]  # (only its last value was read)
    parts = []
    if unknown:
        parts.append(f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                     f"{takes.route} {offer}")
    if repeated:
        parts.append(f"given more than once: {', '.join(repeated)} (each takes one value)")
    if errors:
        parts.append(f"invalid fields: {', '.join(e['field'] for e in errors)}")
    errors += [{"field": f"query.{name}", "pointer": f"/query/{_pointer_token(name)}",
                "message": f"not a query parameter of {takes.route}, which {offer}", "type": "extra_forbidden"}
               for name in unknown]
    errors += [{"field": f"query.{name}", "pointer": f"/query/{_pointer_token(name)}",
                "message": f"given {n} times: it takes one value", "type": "repeated"}
               for name, n in repeated.items()]
    return InvalidEvent(errors, detail="; ".join(parts))


async def refuse_undeclared(request: Request) -> None:
    """A dependency of every route (async: no thread for what is a dict lookup)."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    known = _routes(request.app).get(id(route)) if isinstance(route, APIRoute) else None
    if known is None:
        return
    problem = refused(known, request.query_params)
    if problem is None:
        return
    if known.keyed:
        request.scope[PENDING] = problem
        return
    raise problem

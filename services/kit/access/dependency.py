"""`require(scope)`: the one dependency every route of every service uses to let a caller in.

No or unknown token → 401, a scope the key lacks → 403, too many requests (or open streams) → 429. Which objects
the key may see is the route's to check with `Principal.covers` (404 outside the region).
"""

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.kit.access.keys import Access
from services.kit.access.principal import Principal
from services.kit.access.ratelimit import RateLimiter, Verdict
from services.kit.access.streams import OpenStreams
from services.kit.problems import PENDING, Problem
from services.kit.query import KEY_CHECK

RATE_HEADERS = "kaohe.rate_headers"  # scope key: RateLimit headers for the response
RATE_VERDICT = "kaohe.rate_verdict"  # scope key: the request's one rate-limit verdict
TOKEN = "kaohe.token"  # scope key: the token `authenticate` let in, for `readmit`
STREAM_RETRY_AFTER_S = 5  # when a stream ends is unknown: soon enough for one just closed, not a busy loop

# Declares the scheme in every service's OpenAPI (and the Authorize button of /docs).
bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="kh_<id>_<secret>",
                           description="An API key: `Authorization: Bearer kh_...`")


ACCESS_TOKEN = ("The API key (`kh_...`), for a client that cannot send headers, such as a browser's EventSource. "
                "Prefer `Authorization: Bearer` where you can: a URL may be kept by browsers and proxies. "
                "Kaohe's access log leaves the query string out. Ignored when the header is sent.")


def unauthenticated(detail: str) -> Problem:
    problem = Problem(401, "unauthenticated", "Unauthenticated", detail)
    problem.headers = {"WWW-Authenticate": 'Bearer realm="kaohe"'}
    return problem


async def principal_for(access: Access, token: str) -> Principal | None:
    """The token's principal: from this process's cache on the event loop, else read in a thread."""
    principal = access.authenticate(token, cached_only=True)
    if principal is Access.MISS:
        principal = await run_in_threadpool(access.authenticate, token)
    return principal


def rate_limited(scope: Scope, principal: Principal) -> Problem | None:
    """Counts the request against its key's rate limit, once however many layers ask (the
    Idempotency-Key middleware, before it replays an answer, and then the route's dependency); the
    429 to answer when over it. Sets the RateLimit headers every answer carries."""
    verdict: Verdict | None = scope.get(RATE_VERDICT)
    if verdict is None:
        limiter: RateLimiter = scope["app"].state.rate_limiter
        verdict = scope[RATE_VERDICT] = limiter.take(principal.key_id, principal.rate_limit_per_min)
        scope[RATE_HEADERS] = verdict.headers()
    if verdict.allowed:
        return None
    problem = Problem(429, "rate-limited", "Too many requests",
                      f"this key may make {verdict.quota} requests per minute; retry in {verdict.retry_after_s} s")
    problem.headers = dict(verdict.headers())
    return problem


async def authenticate(request: Request, token: str | None) -> Principal:
    """The caller's principal, rate limited; raises 401 or 429."""
    if not token:
        raise unauthenticated("send an API key: Authorization: Bearer kh_...")
    principal = await principal_for(request.app.state.access, token)
    if principal is None:
        raise unauthenticated("the API key is unknown, revoked or expired")
    if problem := rate_limited(request.scope, principal):
        raise problem
    request.state.principal = principal
    request.scope[TOKEN] = token
    return principal


async def readmit(request: Request, *scopes: str) -> Principal:
    """The request's key checked again, as a new request would be (not counted against its rate
    limit): for a response that outlives the check at its start, such as an SSE stream. The same
    per-process cache answers, so a revocation elsewhere is seen within `Access.cache_s` and an
    expiry at once, and the access database is read at most once per key per `cache_s`. Raises
    the 401 or 403 a new request would get. Only for a route behind `require(...)`: the token it
    checks again is the one `authenticate` let in (kept in the request's scope)."""
    principal = await principal_for(request.app.state.access, request.scope[TOKEN])
    if principal is None:
        raise unauthenticated("the API key is unknown, revoked or expired")
    _check_scopes(principal, scopes)
    return principal


def _check_scopes(who: Principal, scopes: tuple[str, ...]) -> None:
    missing = [s for s in scopes if not who.has(s)]
    if missing:  # name only what the key lacks, not every scope the route needs
        raise Problem(403, "forbidden", "Forbidden",
                      f"this API key lacks the scope{'s' if len(missing) > 1 else ''} {' and '.join(missing)}",
                      required_scopes=list(scopes), missing_scopes=missing)


def held_provinces(request: Request) -> Callable[[], set[str]]:
    """The service's own answer to "which provinces does this store hold" (two-digit prefixes),
    set as `app.state.held_provinces`; none known without it."""
    return getattr(request.app.state, "held_provinces", set)


def require(*scopes: str, query_token: bool = False, everywhere: bool = False):
    """A dependency returning the caller's Principal if its key holds every one of `scopes`; else a
    403 naming the scopes it lacks (`missing_scopes`) and all it needs (`required_scopes`).

    `query_token` also accepts `?access_token=` (for EventSource, which cannot send headers).
    `everywhere`: only a key holding every region of the store (what changes or spans them all):
    the province's key while the store holds one province, the national key (000000) once it
    holds several.
    """

    async def admit(request: Request, token: str | None) -> Principal:
        who = await authenticate(request, token)
        _check_scopes(who, scopes)
        if everywhere:
            held = await run_in_threadpool(held_provinces(request))
            if not who.holds_all(held):
                wanted = "every province's key (000000)" if len(held) > 1 else "a province-wide key"
                raise Problem(403, "forbidden", "Forbidden", f"this spans every region held: it needs {wanted}; "
                              f"yours is for {who.region}")
        if pending := request.scope.pop(PENDING, None):  # found before the key was checked (kit.query)
            raise pending
        return who

    if query_token:  # declared as a parameter so that the OpenAPI of the route shows it
        async def principal(request: Request,
                            credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
                            access_token: Annotated[str | None, Query(description=ACCESS_TOKEN)] = None) -> Principal:
            return await admit(request, credentials.credentials if credentials else access_token)
    else:
        async def principal(request: Request,
                            credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> Principal:
            return await admit(request, credentials.credentials if credentials else None)

    setattr(principal, KEY_CHECK, True)
    return principal


def streaming(*scopes: str, query_token: bool = False, admitted: Callable[..., Any] | None = None):
    """`require(...)` for a response that stays open (SSE): the key also holds one of its
    `stream_max_per_key` places in this process (`app.state.open_streams`) until the response has
    ended, however it ends; 429 when it holds them all.

    The place is given back when FastAPI leaves the request's dependencies, after the response was
    sent or failed: a generator's `finally` alone would miss a client gone before the first byte
    (Starlette then never starts the generator).

    `admitted`: the route's own `require(...)`, when its other dependencies need the key too (one
    check of the key per request: FastAPI runs a dependency once per request). A dependency of the
    route listed before this one runs first: its 404 comes before this one's 429."""
    admitted = admitted or require(*scopes, query_token=query_token)

    async def place(request: Request, who: Annotated[Principal, Depends(admitted)]) -> AsyncIterator[Principal]:
        streams: OpenStreams = request.app.state.open_streams
        if (held := streams.take(who.key_id)) is not None:
            problem = Problem(429, "too-many-streams", "Too many open streams",
                              f"this key has {held} streams open, the most it may hold ({streams.max_per_key} per "
                              f"API process); close one, or retry in {STREAM_RETRY_AFTER_S} s",
                              open_streams=held, max_streams=streams.max_per_key)
            problem.headers = {"Retry-After": str(STREAM_RETRY_AFTER_S)}
            raise problem
        try:
            yield who
        finally:
            streams.give_back(who.key_id)

    return place


class RateHeaders:
    """Adds the RateLimit headers `authenticate` chose to whatever response the request gets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and scope.get(RATE_HEADERS):
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in scope[RATE_HEADERS]
                         if k.lower().encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

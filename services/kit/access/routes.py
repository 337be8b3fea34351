"""Admin endpoints for API keys (mounted by intake): create, list, show, revoke.

A key with `admin` manages keys inside its own region, with at most its own scopes: a
prefecture's admin can make keys for its counties, never for a neighbour or the province. Nor
can a key it makes outlive it or be allowed more requests a minute than it is.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from services.kit.access.dependency import require
from services.kit.access.idempotency import REPLAY_HEADERS, ShownOnce
from services.kit.access.keys import Access
from services.kit.access.principal import NATIONAL, SCOPES, Principal, key_region, not_found
from services.kit.access.tables import ApiKey
from services.kit.problems import MEDIA_TYPE, Problem, field_problem
from services.kit.types import IsoDateTime

router = APIRouter(prefix="/v1/keys", tags=["access"])
PROBLEM = {"content": {MEDIA_TYPE: {}}}
Admin = Annotated[Principal, Depends(require("admin"))]


class KeyCreate(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=200, description="Who holds the key, e.g. 凉山州扶贫办 dashboard")
    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES),
                              description=f"Any of: {', '.join(SCOPES)}")
    region: str = Field(description="Province, prefecture or county code the key may see (inside yours); "
                                    f"{NATIONAL}: every province")
    rate_limit_per_min: int | None = Field(None, ge=1, le=10_000_000,
                                           description="Requests per minute, at most your key's own limit; "
                                                       "left out: your key's limit; null (or left out when your "
                                                       "key has none): the service setting")
    expires_at: IsoDateTime | None = Field(None, description="When the key stops working (ISO 8601 with offset); "
                                                          "in the future, and not after your key expires; left "
                                                          "out: when your key expires; null (or left out when "
                                                          "your key never expires): never")

    @field_validator("scopes")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(unknown)}; allowed: {', '.join(SCOPES)}")
        return value

    @field_validator("region")
    @classmethod
    def _code(cls, value: str) -> str:
        if not key_region(value):
            raise ValueError(f"a 6-digit administrative division code (or {NATIONAL}: every province)")
        return value


class KeyPublic(BaseModel):
    id: str
    name: str
    scopes: list[str]
    region: str
    rate_limit_per_min: int | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> "KeyPublic":
        return cls(id=row.id, name=row.name, scopes=row.scopes.split(), region=row.region,
                   rate_limit_per_min=row.rate_limit_per_min, created_by=row.created_by,
                   created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at)


class KeyCreated(KeyPublic):
    token: str | None = Field(description="The bearer token. Shown once: Kaohe keeps only its hash. null in a "
                                          "replay (same Idempotency-Key): the token is not kept for it either")


def _beyond(field: str, message: str) -> Problem:
    problem = field_problem(field, message)
    return Problem(403, "forbidden", "Forbidden", problem.detail, errors=problem.extra["errors"])


def bounded(body: KeyCreate, admin: Principal, default_per_min: int) -> tuple[datetime | None, int | None]:
    """The new key's expiry and rate limit, not past its creator's. Expiry: left out, the
    creator's; a null (never) only when the creator has none either. Rate limit: left out or null,
    the service setting (`default_per_min`), unless that is over the creator's own limit: then,
    left out, the creator's, and null is refused. Else a 422 naming each field that goes past them."""
    expires_at, per_min, sent, past = body.expires_at, body.rate_limit_per_min, body.model_fields_set, []
    if admin.expires_at is not None:
        until = admin.expires_at.isoformat()
        if "expires_at" not in sent:
            expires_at = admin.expires_at
        elif expires_at is None:
            past.append(field_problem("expires_at", f"null (never) would outlive your key, which expires at {until}: "
                                                    "give a time up to then, or leave it out to take yours"))
        elif expires_at > admin.expires_at:
            past.append(field_problem("expires_at", f"{expires_at.isoformat()} is after your key expires ({until}): "
                                                    "a key you make may not outlive yours"))
    if (limit := admin.rate_limit_per_min) is not None:
        if "rate_limit_per_min" not in sent:
            per_min = limit if limit < default_per_min else None  # the service setting, unless over the creator's
        elif per_min is None and limit < default_per_min:
            past.append(field_problem("rate_limit_per_min", f"null (the service setting, {default_per_min}) is over "
                                                            f"your key's own limit of {limit} requests per minute: "
                                                            f"give at most {limit}, or leave it out to take yours"))
        elif per_min is not None and per_min > limit:
            past.append(field_problem("rate_limit_per_min", f"{per_min} is over your key's own limit of "
                                                            f"{limit} requests per minute"))
    if past:
        raise Problem(422, "validation", "Invalid request", "; ".join(p.detail for p in past),
                      errors=[e for p in past for e in p.extra["errors"]])
    return expires_at, per_min


def known_region(request: Request) -> Callable[[str], bool]:
    """The service's answer to "does this region exist" (`app.state.known_region`, set by the
    service holding the regions; it may read the database); every code without it."""
    return getattr(request.app.state, "known_region", lambda code: True)


def _access(request: Request) -> Access:
    return request.app.state.access


AccessDep = Annotated[Access, Depends(_access)]


@router.post("", status_code=201, response_model=KeyCreated, summary="Create an API key (the token is shown once)",
             dependencies=[Depends(ShownOnce("token"))],
             responses={201: {"description": "The new key and its token", "headers": REPLAY_HEADERS},
                        403: {"description": "Scopes or region beyond the caller's", **PROBLEM},
                        422: {"description": "Invalid request, or an expiry or rate limit past your key's",
                              **PROBLEM}})
async def create_key(body: KeyCreate, admin: Admin, access: AccessDep, request: Request) -> KeyCreated:
    """The token is in this answer only: Kaohe keeps its SHA-256, never the token.

    Retrying with the same `Idempotency-Key` makes no second key: it answers 201 with the first
    key's fields and `"token": null`, with `Idempotent-Replayed: true` and `Idempotent-Redacted:
    token` (the token is not kept for replays either). If the first answer was lost, revoke that
    key by its `id` and make a new one.

    A key you make stays within yours: inside its region, with at most its scopes (else 403), and
    neither expiring after it nor allowed more requests a minute (else 422); left out, its expiry
    is your key's, and its rate limit the service's setting, or your key's if that is lower.
    """
    if body.expires_at is not None and body.expires_at <= access.clock():  # the clock that expires keys
        raise field_problem("expires_at", f"{body.expires_at.isoformat()} has passed: a key that would never work")
    expires_at, rate_limit_per_min = bounded(body, admin, request.app.state.rate_limiter.default_per_min)
    # outside the admin's region is answered as a region that does not exist (README)
    unseen = not admin.sees(body.region) and body.region != NATIONAL
    if unseen or admin.covers(body.region) and not await run_in_threadpool(known_region(request), body.region):
        raise field_problem("region", f"{body.region} is not a known region")
    if not admin.covers(body.region):  # its own province or prefecture, or the national scope: it knows them
        raise _beyond("region", f"{body.region} is outside your key's region {admin.region}")
    beyond = [s for s in body.scopes if not admin.has(s)]
    if beyond:
        raise _beyond("scopes", f"your key cannot grant {', '.join(beyond)}")
    row, token = await run_in_threadpool(
        lambda: access.create(name=body.name, scopes=body.scopes, region=body.region, created_by=admin.key_id,
                              rate_limit_per_min=rate_limit_per_min, expires_at=expires_at))
    return KeyCreated(**KeyPublic.of(row).model_dump(), token=token)


@router.get("", response_model=list[KeyPublic], summary="Keys inside your region (never their tokens)")
async def list_keys(admin: Admin, access: AccessDep,
                    include_revoked: Annotated[bool, Query(description="Also list revoked keys")] = False):
    rows = await run_in_threadpool(lambda: access.list(admin.region, include_revoked=include_revoked))
    return [KeyPublic.of(r) for r in rows]


async def _visible(access: Access, admin: Principal, key_id: str) -> ApiKey:
    row = await run_in_threadpool(access.get, key_id)
    if row is None or not admin.covers(row.region):
        raise not_found("API key", key_id)
    return row


@router.get("/{key_id}", response_model=KeyPublic, summary="One key",
            responses={404: {"description": "No such key in your region", **PROBLEM}})
async def get_key(key_id: str, admin: Admin, access: AccessDep) -> KeyPublic:
    return KeyPublic.of(await _visible(access, admin, key_id))


@router.delete("/{key_id}", response_model=KeyPublic, summary="Revoke a key (it stops working at once)",
               responses={404: {"description": "No such key in your region", **PROBLEM}})
async def revoke_key(key_id: str, admin: Admin, access: AccessDep) -> KeyPublic:
    await _visible(access, admin, key_id)
    return KeyPublic.of(await run_in_threadpool(access.revoke, key_id))

"""The key store: create, list and revoke API keys; turn a bearer token into a Principal.

A token is `kh_<id>_<secret>`: the id finds the row, the secret (32 random bytes) is checked
against its SHA-256. Lookups are cached per process for `cache_s` seconds, so a revocation made
through another process takes effect there within that time (at once in the revoking process).
"""

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import Engine, select
from sqlmodel import Session

from services.kit.access.principal import Principal, region_prefix
from services.kit.access.tables import ApiKey
from services.kit.db import service_engine

TOKEN_PREFIX = "kh_"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    parts = token[len(TOKEN_PREFIX):].split("_", 1)
    if len(parts) != 2 or not parts[0] or not parts[1] or len(parts[0]) > 32:
        return None
    return parts[0], parts[1]


def principal_of(row: ApiKey) -> Principal:
    return Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes.split()), region=row.region,
                     rate_limit_per_min=row.rate_limit_per_min, expires_at=row.expires_at)


class Access:
    """API keys in the `access` database, as every service's API sees them."""

    MISS = object()  # authenticate(cached_only=True): the key is not in this process's cache

    def __init__(self, engine: Engine, *, cache_s: float = 5.0, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine, self.cache_s, self.clock = engine, cache_s, clock
        self._cache: dict[str, tuple[float, ApiKey | None, Principal | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "Access":
        return cls(service_engine(settings, "access"))

    def create(self, *, name: str, scopes: list[str], region: str, created_by: str | None = None,
               rate_limit_per_min: int | None = None, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
        """The new key and its token; the token is never stored and cannot be shown again."""
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        row = ApiKey(id=key_id, name=name, secret_hash=_hash(secret), scopes=" ".join(sorted(set(scopes))),
                     region=region, rate_limit_per_min=rate_limit_per_min, created_by=created_by,
                     created_at=self.clock(), expires_at=expires_at)
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
        return row, f"{TOKEN_PREFIX}{key_id}_{secret}"

    def list(self, region: str, *, include_revoked: bool = False) -> list[ApiKey]:
        """Keys whose region lies inside `region`, oldest first."""
        query = select(ApiKey).where(ApiKey.region.startswith(region_prefix(region))).order_by(ApiKey.created_at)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        with Session(self.engine) as session:
            return list(session.execute(query).scalars())

    def get(self, key_id: str) -> ApiKey | None:
        with Session(self.engine) as session:
            return session.get(ApiKey, key_id)

    def revoke(self, key_id: str) -> ApiKey | None:
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(ApiKey, key_id)
            if row is not None and row.revoked_at is None:
                row.revoked_at = self.clock()
                session.commit()
        with self._lock:
            self._cache.pop(key_id, None)
        return row

    def authenticate(self, token: str, *, cached_only: bool = False):
        """The key's principal if the token is valid, unrevoked and unexpired; else None.

        With `cached_only`, answers MISS instead of reading the database (the event loop's path).
        """
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        hit = self._cached(key_id)
        if hit is self.MISS:
            if cached_only:
                return self.MISS
            hit = self._load(key_id)
        row, principal = hit
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
            return None
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= self.clock()):
            return None
        return principal

    def _cached(self, key_id: str):
        """(row, principal) from this process's cache, or MISS."""
        with self._lock:
            hit = self._cache.get(key_id)
        return hit[1:] if hit and hit[0] > time.monotonic() else self.MISS

    def _load(self, key_id: str) -> tuple[ApiKey | None, Principal | None]:
        now = time.monotonic()
        row = self.get(key_id)
        principal = principal_of(row) if row is not None else None  # built once per cache period
        with self._lock:
            if len(self._cache) > 10_000:  # unknown ids are cached too: bound the dict
                self._cache.clear()
            self._cache[key_id] = (now + self.cache_s, row, principal)
        return row, principal

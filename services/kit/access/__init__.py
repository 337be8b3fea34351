"""Partner access for every service: API keys with scopes and a region, rate limits, idempotency."""

from services.kit.access.dependency import RateHeaders, require
from services.kit.access.idempotency import Idempotency
from services.kit.access.keys import Access
from services.kit.access.principal import SCOPES, Principal, region_prefix
from services.kit.access.ratelimit import RateLimiter


def service_headers(settings) -> dict[str, str]:
    """The Authorization header a worker sends to another service (KAOHE_SERVICE_TOKEN)."""
    return {"Authorization": f"Bearer {settings.service_token}"} if settings.service_token else {}


__all__ = ["SCOPES", "Access", "Idempotency", "Principal", "RateHeaders", "RateLimiter", "region_prefix",
           "require", "service_headers"]

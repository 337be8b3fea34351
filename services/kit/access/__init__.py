"""Partner access for every service: API keys with scopes and a region, rate limits, idempotency.

The names below are loaded when first used: a worker process needs only `service_headers` and
should not load the web framework (FastAPI) that the request-side modules import.
"""

from importlib import import_module
from typing import Any

_WHERE = {"RateHeaders": "dependency", "readmit": "dependency", "require": "dependency", "Idempotency": "idempotency",
          "Access": "keys", "SCOPES": "principal", "Principal": "principal", "region_prefix": "principal",
          "RateLimiter": "ratelimit", "ShownOnce": "idempotency", "OpenStreams": "streams",
          "streaming": "dependency"}


def service_headers(settings) -> dict[str, str]:
    """The Authorization header a worker sends to another service (KAOHE_SERVICE_TOKEN)."""
    return {"Authorization": f"Bearer {settings.service_token}"} if settings.service_token else {}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["SCOPES", "Access", "Idempotency", "OpenStreams", "Principal", "RateHeaders", "RateLimiter",  # noqa: F822
           "ShownOnce", "readmit", "region_prefix", "require", "service_headers", "streaming"]

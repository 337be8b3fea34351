"""Requests per minute per API key: a token bucket per key, in this process.

The quota q refills evenly over the 60 s window (q/60 per second) and may be spent in a burst.
Headers follow draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "key";q=600;w=60` and
`RateLimit: "key";r=<remaining>;t=<seconds until full>`. With several API processes behind a
load balancer each keeps its own buckets, so a key's effective limit is q times the processes
(docs/operations.md sizes for that).
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60


@dataclass(slots=True)
class Verdict:
    allowed: bool
    quota: int
    remaining: int
    reset_s: int  # until the bucket is full again
    retry_after_s: int  # until one request is allowed (0 when allowed)

    def headers(self) -> list[tuple[str, str]]:
        out = [("RateLimit-Policy", f'"key";q={self.quota};w={WINDOW_S}'),
               ("RateLimit", f'"key";r={self.remaining};t={self.reset_s}')]
        if not self.allowed:
            out.append(("Retry-After", str(self.retry_after_s)))
        return out


class RateLimiter:
    def __init__(self, default_per_min: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.default_per_min, self.clock = default_per_min, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key_id: str, per_min: int | None = None) -> Verdict:
        quota = per_min or self.default_per_min
        rate = quota / WINDOW_S
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (float(quota), now))
            tokens = min(float(quota), tokens + (now - at) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key_id] = (tokens, now)
        return Verdict(allowed=allowed, quota=quota, remaining=int(tokens),
                       reset_s=math.ceil((quota - tokens) / rate),
                       retry_after_s=0 if allowed else max(1, math.ceil((1.0 - tokens) / rate)))

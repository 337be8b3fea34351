"""The dispatcher: sends due deliveries (several at once), records every attempt, schedules the
next one, and disables endpoints that answer 410 or keep failing.

A delivery is claimed by moving its `next_attempt_at` forward by a lease in a conditional
UPDATE, so two dispatchers never send the same attempt; if a dispatcher dies mid-send the lease
runs out and the attempt is made again. Only a 2xx counts; redirects are not followed.
"""

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpcore
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from services.kit import metrics
from services.kit.settings import Settings
from services.notify import signing
from services.notify.models import Attempt, Delivery, Endpoint, Message
from services.notify.urls import GuardedBackend

log = logging.getLogger(__name__)
USER_AGENT = "Kaohe-Webhooks/1.0"
MAX_RESPONSE_BYTES = 64 * 1024  # read (and drop) at most this much of a receiver's answer


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class Job:
    delivery_id: int
    message_id: str
    endpoint_id: str
    url: str
    body: bytes
    secrets: list[str]
    tries: int


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    latency_ms: int
    error: str | None
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from `Retry-After` (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - now).total_seconds())


class Dispatcher:
    def __init__(self, settings: Settings, db: Engine, *, clock: Callable[[], datetime] = utcnow,
                 rng: Callable[[], float] = random.random) -> None:
        self.settings, self.db, self.clock, self.rng = settings, db, clock, rng
        self.schedule = settings.notify_retry_schedule_s
        self.lease = timedelta(seconds=2 * settings.notify_timeout_s + 5)
        self.pool = httpcore.ConnectionPool(
            network_backend=GuardedBackend(allow_private=settings.notify_allow_private_urls),
            max_connections=4 * settings.notify_concurrency, retries=0, keepalive_expiry=30)
        self.executor = ThreadPoolExecutor(settings.notify_concurrency, thread_name_prefix="notify-send")

    # ---- claiming ------------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Job]:
        """Up to `limit` due deliveries of enabled endpoints, each leased to this dispatcher."""
        now = self.clock()
        q = (select(Delivery.id, Delivery.message_id, Delivery.endpoint_id, Delivery.tries, Delivery.next_attempt_at,
                    Endpoint.url, Endpoint.secret, Endpoint.previous_secret, Endpoint.previous_secret_expires_at,
                    Message.body)
             .join(Endpoint, Endpoint.id == Delivery.endpoint_id).join(Message, Message.id == Delivery.message_id)
             .where(Delivery.status == "pending", Delivery.next_attempt_at <= now, Endpoint.disabled_at.is_(None))
             .order_by(Delivery.next_attempt_at, Delivery.id).limit(limit))
        jobs = []
        with Session(self.db) as s:
            for r in s.execute(q).all():
                taken = s.execute(update(Delivery).where(
                    Delivery.id == r.id, Delivery.status == "pending", Delivery.next_attempt_at == r.next_attempt_at)
                    .values(next_attempt_at=now + self.lease)).rowcount
                if taken != 1:
                    continue  # another dispatcher has it
                secrets = [r.secret]
                if r.previous_secret and r.previous_secret_expires_at and r.previous_secret_expires_at > now:
                    secrets.append(r.previous_secret)
                jobs.append(Job(r.id, r.message_id, r.endpoint_id, r.url, r.body.encode(), secrets, r.tries))
            s.commit()
        return jobs

    # ---- sending -------------------------------------------------------------------------------

    def send(self, job: Job) -> Outcome:
        """One HTTP attempt, signed afresh (the timestamp is the attempt's)."""
        timestamp = int(self.clock().timestamp())
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   **signing.headers(job.secrets, job.message_id, timestamp, job.body)}
        t = self.settings.notify_timeout_s
        started = time.monotonic()
        try:
            with self.pool.stream("POST", job.url, headers=list(headers.items()), content=job.body,
                                  extensions={"timeout": {"connect": t, "read": t, "write": t, "pool": t}}) as r:
                read = 0
                for chunk in r.iter_stream():
                    read += len(chunk)
                    if read > MAX_RESPONSE_BYTES:
                        break
                status, answer = r.status, {k.decode().lower(): v.decode("latin-1") for k, v in r.headers}
        except httpcore.TimeoutException as exc:
            return Outcome(None, _ms(started), f"timeout after {t:g}s ({type(exc).__name__})")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            return Outcome(None, _ms(started), f"{type(exc).__name__}: {exc}"[:500])
        error = None if 200 <= status < 300 else f"HTTP {status}"
        if 300 <= status < 400:
            error = f"HTTP {status}: redirects are not followed (location: {answer.get('location', '-')})"[:500]
        wait_s = retry_after(answer.get("retry-after"), self.clock()) if status in (429, 503) else None
        return Outcome(status, _ms(started), error, wait_s)

    # ---- recording -----------------------------------------------------------------------------

    def record(self, job: Job, outcome: Outcome) -> None:
        """The attempt, the delivery's new state, and the endpoint's health, in one transaction."""
        now = self.clock()
        tries = job.tries + 1
        with Session(self.db) as s:
            s.add(Attempt(delivery_id=job.delivery_id, endpoint_id=job.endpoint_id, message_id=job.message_id,
                          at=now, status_code=outcome.status_code, latency_ms=outcome.latency_ms,
                          error=outcome.error, delivered=outcome.delivered))
            values: dict = {"tries": tries, "last_attempt_at": now}
            if outcome.delivered:
                values.update(status="delivered", next_attempt_at=None)
                counted = "delivered"
            elif outcome.status_code == 410:
                values.update(status="failed", next_attempt_at=None)
                counted = "gone"
            else:
                values.update(self._next(tries, outcome, now))
                counted = "failed" if values.get("status") == "failed" else "retrying"
            s.execute(update(Delivery).where(Delivery.id == job.delivery_id).values(**values))
            if outcome.delivered:
                s.execute(update(Endpoint).where(Endpoint.id == job.endpoint_id).values(failing_since=None))
            elif outcome.status_code == 410:
                disable(s, job.endpoint_id, now, "the receiver answered 410 Gone")
            else:
                self._failing(s, job.endpoint_id, now)
            s.commit()
        metrics.WEBHOOK_DELIVERIES.labels(counted).inc()

    def _next(self, tries: int, outcome: Outcome, now: datetime) -> dict:
        """The next attempt on the schedule (with jitter, and no earlier than Retry-After), or failed."""
        if tries >= len(self.schedule):
            return {"status": "failed", "next_attempt_at": None}
        jitter = self.settings.notify_retry_jitter
        delay = self.schedule[tries] * (1 + jitter * (2 * self.rng() - 1))
        if outcome.retry_after_s is not None:
            delay = max(delay, min(outcome.retry_after_s, self.settings.notify_disable_after_s))
        return {"next_attempt_at": now + timedelta(seconds=delay)}

    def _failing(self, s: Session, endpoint_id: str, now: datetime) -> None:
        s.execute(update(Endpoint).where(Endpoint.id == endpoint_id, Endpoint.failing_since.is_(None))
                  .values(failing_since=now))
        since = s.execute(select(Endpoint.failing_since).where(Endpoint.id == endpoint_id)).scalar_one_or_none()
        limit = timedelta(seconds=self.settings.notify_disable_after_s)
        if since is not None and now - since >= limit:
            disable(s, endpoint_id, now, f"every attempt failed since {since.isoformat()} "
                                         f"({limit.total_seconds():g}s without a success)")

    # ---- the loop ------------------------------------------------------------------------------

    def attempt(self, job: Job) -> Outcome:
        outcome = self.send(job)
        self.record(job, outcome)
        return outcome

    def run_once(self) -> int:
        """Claim and send what is due now, waiting for the sends; returns how many were sent."""
        jobs = self.claim(self.settings.notify_concurrency)
        for f in [self.executor.submit(self.attempt, j) for j in jobs]:
            f.result()
        return len(jobs)

    def run(self, stop: threading.Event) -> None:
        """Keep up to `notify_concurrency` attempts in flight until `stop` is set."""
        inflight: set[Future] = set()
        idle = self.settings.notify_poll_ms / 1000
        while not stop.is_set():
            claimed = []
            free = self.settings.notify_concurrency - len(inflight)
            if free > 0:
                try:
                    claimed = self.claim(free)
                except (OperationalError, DBAPIError) as exc:
                    log.warning("claiming deliveries failed, database unavailable: %s", str(exc).splitlines()[0])
                inflight |= {self.executor.submit(self._attempt_logged, j) for j in claimed}
            if inflight:
                more = bool(claimed) and len(claimed) == free  # maybe more are due: claim again at once
                _, inflight = wait(inflight, timeout=0 if more else idle, return_when=FIRST_COMPLETED)
            elif not claimed:
                stop.wait(idle)
        wait(inflight)

    def _attempt_logged(self, job: Job) -> None:
        """One boundary for a send's failures: a lost record is retried when the lease runs out."""
        try:
            self.attempt(job)
        except Exception:  # noqa: BLE001 - logged with context; the lease brings the delivery back
            log.exception("delivery %d to %s: recording the attempt failed", job.delivery_id, job.endpoint_id)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.pool.close()


def disable(s: Session, endpoint_id: str, now: datetime, reason: str) -> None:
    """Disable an endpoint; its pending deliveries fail (replay them after re-enabling it)."""
    s.execute(update(Endpoint).where(Endpoint.id == endpoint_id, Endpoint.disabled_at.is_(None))
              .values(disabled_at=now, disabled_reason=reason[:500], updated_at=now))
    s.execute(update(Delivery).where(Delivery.endpoint_id == endpoint_id, Delivery.status == "pending")
              .values(status="failed", next_attempt_at=None))
    log.warning("endpoint %s disabled: %s", endpoint_id, reason)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

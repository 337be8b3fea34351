"""The process's Prometheus metrics (all named `kaohe_*`; docs/observability.md lists them with
the alerts to set), and a worker process's HTTP port that serves them. The APIs' side (the
middleware that counts and logs every request, `GET /metrics`) is `kit.observe`: workers do not
load the web framework.

Counters live in the process's default registry: a worker's relay thread and its consumer loop
add to the same counters its metrics port serves.
"""

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from http.server import HTTPServer
from typing import Any

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric

disable_created_metrics()  # no `*_created` series beside every counter: Prometheus has no use for them
log = logging.getLogger(__name__)

UNMATCHED = "unmatched"  # the route label of a request no route matched (never the raw path)
QUIET_ROUTES = {"/healthz", "/readyz", "/metrics"}  # probes and scrapes: access-logged at DEBUG only

# ---- HTTP (every API) -----------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "kaohe_http_requests_total", "HTTP requests answered, by route template and status.",
    ["service", "method", "route", "status"])
HTTP_DURATION = Histogram(
    "kaohe_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (a stream: its whole life).",
    ["service", "method", "route", "status"])

# ---- events ---------------------------------------------------------------------------------

INTAKE_EVENTS_ACCEPTED = Counter(
    "kaohe_intake_events_accepted_total", "Events intake stored (counted once their transaction committed).",
    ["type"])
INTAKE_EVENTS_REJECTED = Counter(
    "kaohe_intake_events_rejected_total",
    "Events the store refused (a ledger conflict 409, a region or time check 422/404), single or in a batch; "
    "a body that fails the schema shows as HTTP 422 on the route instead.", ["status"])
SCORING_EVENTS = Counter(
    "kaohe_scoring_events_total", "Events the scoring worker applied to scores (rate = events scored per second).")

# ---- Kafka: outbox, consumers, dead letters ---------------------------------------------------

OUTBOX_PUBLISHED = Counter(
    "kaohe_outbox_published_total", "Outbox rows the broker acknowledged, by topic.", ["service", "topic"])
CONSUMER_LAG = Gauge(
    "kaohe_consumer_lag", "Messages between a consumer's position and the partition's end, as of its last poll.",
    ["group", "topic", "partition"])
CONSUMER_MESSAGES = Counter(
    "kaohe_consumer_messages_total", "Messages a consumer group's poll returned, by topic.", ["group", "topic"])
DEAD_LETTERS = Counter(
    "kaohe_dead_letters_total",
    "Consumed messages written to `<topic>.dlt` as unusable, by source topic (counted when the dead-letter "
    "row is written; a batch that rolls back and is retried counts again).", ["topic"])

# ---- notify ---------------------------------------------------------------------------------

WEBHOOK_DELIVERIES = Counter(
    "kaohe_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered (2xx), retrying (failed, another attempt is scheduled), "
    "failed (failed, no attempt left), gone (410: the endpoint is disabled).", ["outcome"])


class ScrapeGauge:
    """A gauge whose values are read when scraped (a database count, an age), one source per label
    set. A source returning None (or raising) gives no sample rather than a wrong one."""

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (),
                 registry: Any = REGISTRY) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self._sources: dict[tuple[str, ...], Callable[[], Callable[[], float | None] | None]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def watch(self, source: Callable[[], float | None], **labels: str) -> None:
        """Read `source` for these labels from now on (replacing any earlier one). A bound method is
        held weakly: a dropped relay or app leaves the gauge instead of being kept alive by it."""
        key = tuple(labels[n] for n in self.labelnames)
        ref: Callable[[], Callable[[], float | None] | None]
        if hasattr(source, "__self__") and hasattr(source, "__func__"):
            ref = weakref.WeakMethod(source)  # type: ignore[arg-type]
        else:
            def ref(source=source):
                return source
        with self._lock:
            self._sources[key] = ref

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            sources = list(self._sources.items())
        for key, ref in sources:
            source = ref()
            if source is None:
                with self._lock:
                    if self._sources.get(key) is ref:
                        del self._sources[key]
                continue
            try:
                value = source()
            except Exception as exc:
                log.debug("%s%s not read: %s", self.name, key, str(exc).splitlines()[0] if str(exc) else exc)
                continue
            if value is not None:
                family.add_metric(list(key), float(value))
        return [family]


OUTBOX_BACKLOG = ScrapeGauge(
    "kaohe_outbox_backlog", "Outbox rows not yet acknowledged by the broker (read at scrape time).", ["service"])
OUTBOX_OLDEST_AGE = ScrapeGauge(
    "kaohe_outbox_oldest_unsent_age_seconds", "Age of the oldest unsent outbox row; 0 when none (at scrape time).",
    ["service"])
NEWEST_STANDING_AGE = ScrapeGauge(
    "kaohe_ranking_newest_standing_age_seconds",
    "Seconds since the newest standing changed (read by the ranking API from its database at scrape time).")

OPEN_STREAMS = ScrapeGauge(
    "kaohe_open_streams", "Streams (SSE) this API process holds open, every key's (at scrape time).", ["service"])


# ---- serving ---------------------------------------------------------------------------------

def serve(port: int, host: str) -> HTTPServer | None:
    """A worker's `/metrics` on `host:port` (a daemon thread). A port in use is logged, not fatal:
    a second worker started on one machine with the same port still does its work."""
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics not served: %s:%d unavailable (%s); set KAOHE_METRICS_PORT (0 = off)", host, port, exc)
        return None
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server


def serve_for(settings: Any, process: str) -> HTTPServer | None:
    """The metrics port of a worker process as the settings place it (None: off or unavailable)."""
    port = settings.metrics_port_for(process)
    return serve(port, settings.host) if port else None


def stop(server: HTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


__all__ = ["CONSUMER_LAG", "CONSUMER_MESSAGES", "DEAD_LETTERS", "HTTP_DURATION", "HTTP_REQUESTS",
           "INTAKE_EVENTS_ACCEPTED", "INTAKE_EVENTS_REJECTED", "NEWEST_STANDING_AGE", "OUTBOX_BACKLOG",
           "OPEN_STREAMS", "OUTBOX_OLDEST_AGE", "OUTBOX_PUBLISHED", "SCORING_EVENTS", "UNMATCHED", "WEBHOOK_DELIVERIES",
           "ScrapeGauge", "serve", "serve_for", "stop"]

"""Settings, read from the environment once, in `main()`/`create_app`, never at import."""

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Service = Literal["intake", "scoring", "ranking", "notify", "access"]
# Worker processes' /metrics ports when KAOHE_METRICS_PORT is unset (the deploy manifests use these).
METRICS_PORTS = {"intake-relay": 9101, "scoring-worker": 9102, "ranking-worker": 9103, "notify-worker": 9104}


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every knob, with its environment variable; defaults run everything on one machine."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    data_dir: Path = Field(Path("var"), validation_alias=_env("KAOHE_DATA_DIR", "data_dir"))
    host: str = Field("127.0.0.1", validation_alias=_env("KAOHE_HOST", "host"))
    intake_port: int = Field(8001, validation_alias=_env("KAOHE_INTAKE_PORT", "intake_port"))
    scoring_port: int = Field(8002, validation_alias=_env("KAOHE_SCORING_PORT", "scoring_port"))
    ranking_port: int = Field(8003, validation_alias=_env("KAOHE_RANKING_PORT", "ranking_port"))
    notify_port: int = Field(8004, validation_alias=_env("KAOHE_NOTIFY_PORT", "notify_port"))
    broker_port: int = Field(9092, validation_alias=_env("KAOHE_BROKER_PORT", "broker_port"))

    # Kafka: unset means "start/use the local broker on broker_port".
    kafka_bootstrap_servers: str | None = Field(
        None, validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers")
    )
    topic_partitions: Annotated[int, Field(ge=1, le=1000)] = Field(
        6, validation_alias=_env("KAOHE_TOPIC_PARTITIONS", "topic_partitions")
    )

    # Databases: a per-service URL wins, then DATABASE_URL (one schema per service), then SQLite.
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL", "database_url"))
    intake_database_url: str | None = Field(
        None, validation_alias=_env("KAOHE_INTAKE_DATABASE_URL", "intake_database_url")
    )
    scoring_database_url: str | None = Field(
        None, validation_alias=_env("KAOHE_SCORING_DATABASE_URL", "scoring_database_url")
    )
    ranking_database_url: str | None = Field(
        None, validation_alias=_env("KAOHE_RANKING_DATABASE_URL", "ranking_database_url")
    )
    notify_database_url: str | None = Field(
        None, validation_alias=_env("KAOHE_NOTIFY_DATABASE_URL", "notify_database_url")
    )
    access_database_url: str | None = Field(
        None, validation_alias=_env("KAOHE_ACCESS_DATABASE_URL", "access_database_url"),
        description="API keys and idempotency records, shared by every service's API.")

    # Access
    rate_limit_per_min: int = Field(
        6000, validation_alias=_env("KAOHE_RATE_LIMIT_PER_MIN", "rate_limit_per_min"),
        description="Requests per minute per API key and API process, unless the key sets its own.")
    service_token: str | None = Field(
        None, validation_alias=_env("KAOHE_SERVICE_TOKEN", "service_token"),
        description="The API key workers use to read other services (intake's regions and export).")

    # Scoring
    intake_url: str | None = Field(None, validation_alias=_env("KAOHE_INTAKE_URL", "intake_url"),
                                   description="Where scoring reads regions and the export; default: local intake.")
    scoring_url: str | None = Field(None, validation_alias=_env("KAOHE_SCORING_URL", "scoring_url"),
                                    description="Where the dashboard reads scores; default: local scoring.")
    stream_poll_ms: int = Field(200, validation_alias=_env("KAOHE_STREAM_POLL_MS", "stream_poll_ms"),
                                description="How often an SSE stream looks for new standing changes.")
    stream_max_per_key: Annotated[int, Field(ge=1)] = Field(
        5, validation_alias=_env("KAOHE_STREAM_MAX_PER_KEY", "stream_max_per_key"),
        description="Streams (SSE) one API key may hold open at once, per API process: each costs a database "
        "poll every stream_poll_ms, and the rate limit counts only its connect.")
    ranking_batch: int = Field(2000, validation_alias=_env("KAOHE_RANKING_BATCH", "ranking_batch"))
    scoring_policy: str = Field(
        "default-v3", validation_alias=_env("KAOHE_SCORING_POLICY", "scoring_policy"),
        description="The shipped policy file (services/scoring/policies/<id>.toml) in force unless one added "
        "over the API is active; the worker rescores every score under it when it starts with a new one.")
    scoring_tick_s: float = Field(60.0, validation_alias=_env("KAOHE_SCORING_TICK_S", "scoring_tick_s"))
    scoring_batch: int = Field(5000, validation_alias=_env("KAOHE_SCORING_BATCH", "scoring_batch"))
    consumer_instance_id: str | None = Field(
        None, validation_alias=_env("KAOHE_CONSUMER_INSTANCE_ID", "consumer_instance_id"),
        description="Kafka static membership (group.instance.id): a restarted worker takes its place back "
        "without waiting for the session timeout. Unique per worker process.")
    consumer_session_timeout_ms: int = Field(
        10_000, validation_alias=_env("KAOHE_CONSUMER_SESSION_TIMEOUT_MS", "consumer_session_timeout_ms"))
    consumer_max_poll_interval_ms: int = Field(
        5_000, validation_alias=_env("KAOHE_CONSUMER_MAX_POLL_INTERVAL_MS", "consumer_max_poll_interval_ms"),
        description="Also the rebalance timeout: a group (re)join with tansu takes about this long, so it "
        "is kept short; a batch must be processed within it.")
    consumer_fetch_max_wait_ms: int = Field(
        50, ge=0, le=10_000,
        validation_alias=_env("KAOHE_CONSUMER_FETCH_MAX_WAIT_MS", "consumer_fetch_max_wait_ms"),
        description="How long the broker may hold a fetch with nothing new. With kafka-python's default "
        "(500 ms) the local broker added about 130 ms (p50) and 250 ms (p99) to every consumer hop; with "
        "50 ms, 4 and 8 ms (a message produced every 50 ms, measured).")

    # Intake
    regions_file: Path | None = Field(
        None, validation_alias=_env("KAOHE_REGIONS_FILE", "regions_file"),
        description="A JSON file of regions in the shipped data's shape, loaded by intake's set-up instead of "
        "the shipped Sichuan regions (e.g. a national division list; bench/regions.py generates one).")
    timezone: str = Field("Asia/Shanghai", validation_alias=_env("KAOHE_TIMEZONE", "timezone"))
    max_future_skew_s: int = Field(
        86_400, validation_alias=_env("KAOHE_MAX_FUTURE_SKEW_S", "max_future_skew_s"),
        description="How far in the future occurred_at may lie (clock skew of field devices).",
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, validation_alias=_env("KAOHE_MAX_BODY_BYTES", "max_body_bytes"))
    relay_batch_size: int = Field(500, validation_alias=_env("KAOHE_RELAY_BATCH_SIZE", "relay_batch_size"))
    relay_idle_ms: int = Field(50, validation_alias=_env("KAOHE_RELAY_IDLE_MS", "relay_idle_ms"))

    # Observability
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        None, validation_alias=_env("KAOHE_METRICS_PORT", "metrics_port"),
        description="Where a worker process serves /metrics (APIs serve it on their own port); unset: "
        "intake relay 9101, scoring worker 9102, ranking worker 9103, notify worker 9104; 0 = off.")
    access_log: bool = Field(True, validation_alias=_env("KAOHE_ACCESS_LOG", "access_log"),
                             description="One log line per HTTP request (probes and scrapes at DEBUG).")

    # Notify
    notify_allow_private_urls: bool = Field(
        False, validation_alias=_env("KAOHE_NOTIFY_ALLOW_PRIVATE_URLS", "notify_allow_private_urls"),
        description="Development only: accept webhook URLs on loopback/private addresses (the local demo).")
    notify_timeout_s: Annotated[float, Field(gt=0, le=15)] = Field(
        15.0, validation_alias=_env("KAOHE_NOTIFY_TIMEOUT_S", "notify_timeout_s"))
    notify_retry_schedule_s: list[Annotated[float, Field(ge=0)]] = Field(
        [0, 5, 300, 1800, 7200, 18000, 36000, 36000],
        validation_alias=_env("KAOHE_NOTIFY_RETRY_SCHEDULE_S", "notify_retry_schedule_s"), min_length=1,
        description="Delay before each attempt (JSON list); after the last one a delivery has failed.")
    notify_retry_jitter: Annotated[float, Field(ge=0, le=0.5)] = Field(
        0.2, validation_alias=_env("KAOHE_NOTIFY_RETRY_JITTER", "notify_retry_jitter"),
        description="Each retry delay is scaled by a random factor within 1 ± this.")
    notify_disable_after_s: float = Field(
        5 * 86_400, validation_alias=_env("KAOHE_NOTIFY_DISABLE_AFTER_S", "notify_disable_after_s"),
        description="An endpoint failing without a success for this long is disabled.")
    notify_rotation_window_s: float = Field(
        86_400, validation_alias=_env("KAOHE_NOTIFY_ROTATION_WINDOW_S", "notify_rotation_window_s"),
        description="After a secret rotation, deliveries are signed with the old secret too for this long.")
    notify_concurrency: Annotated[int, Field(ge=1, le=256)] = Field(
        16, validation_alias=_env("KAOHE_NOTIFY_CONCURRENCY", "notify_concurrency"))
    notify_poll_ms: int = Field(200, validation_alias=_env("KAOHE_NOTIFY_POLL_MS", "notify_poll_ms"),
                                description="How often the dispatcher looks for due deliveries when idle.")
    notify_tick_s: float = Field(60.0, validation_alias=_env("KAOHE_NOTIFY_TICK_S", "notify_tick_s"),
                                 description="How often the worker looks for rectification deadlines passed.")
    notify_batch: int = Field(1000, validation_alias=_env("KAOHE_NOTIFY_BATCH", "notify_batch"))

    @cached_property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.broker_port}"

    @property
    def local_broker(self) -> bool:
        """True when no external Kafka is configured and we run our own."""
        return not self.kafka_bootstrap_servers

    def database(self, service: Service) -> tuple[str, str | None]:
        """(url, schema) of a service's own database."""
        own = getattr(self, f"{service}_database_url", None)
        if own:
            return own, None
        if self.database_url:
            schema = service if self.database_url.startswith(("postgresql", "postgres:")) else None
            return self.database_url, schema
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}", None

    def port(self, service: Service) -> int:
        return getattr(self, f"{service}_port")

    def metrics_port_for(self, process: str) -> int | None:
        """The port a worker process serves /metrics on; None when off (KAOHE_METRICS_PORT=0)."""
        port = self.metrics_port if self.metrics_port is not None else METRICS_PORTS.get(process, 0)
        return port or None

    @property
    def intake_base_url(self) -> str:
        return self.intake_url or f"http://{self.host}:{self.intake_port}"

    @property
    def scoring_base_url(self) -> str:
        return self.scoring_url or f"http://{self.host}:{self.scoring_port}"

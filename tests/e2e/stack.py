"""The whole system as `make run` starts it (the supervisor and its processes), for e2e tests."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from services.kit.broker import free_port
from services.kit.db import make_engine
from services.kit.run import Child, wait_healthy
from tests.conftest import _PG_REASON, PG_URL

PORTS = ("KAOHE_INTAKE_PORT", "KAOHE_SCORING_PORT", "KAOHE_RANKING_PORT", "KAOHE_NOTIFY_PORT", "KAOHE_BROKER_PORT")
BACKENDS = ("sqlite", "postgresql")
# the settings that would point a stack at outside databases or an outside broker
OUTSIDE = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL",
           *(f"KAOHE_{s}_DATABASE_URL" for s in ("INTAKE", "SCORING", "RANKING", "NOTIFY", "ACCESS")))


def environment(tmp_path, **extra: str) -> tuple[dict[str, str], dict[str, int]]:
    """Free ports and a scratch data directory; the local broker and SQLite unless `extra` sets
    DATABASE_URL (no outside settings)."""
    ports = {name: free_port() for name in PORTS}
    env = {k: v for k, v in os.environ.items() if k not in OUTSIDE}
    env.update({"KAOHE_DATA_DIR": str(tmp_path / "var"), **{k: str(v) for k, v in ports.items()}, **extra})
    return env, ports


@contextmanager
def database_env(backend: str) -> Iterator[dict[str, str]]:
    """The environment placing a stack on `backend`: nothing for SQLite (files in the data
    directory); for PostgreSQL, DATABASE_URL of a new database (one schema per service in it),
    dropped afterwards."""
    if backend == "sqlite":
        yield {}
        return
    if _PG_REASON:
        pytest.skip(_PG_REASON)
    name = f"kaohe_e2e_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")  # CREATE/DROP DATABASE refuse a transaction
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield {"DATABASE_URL": make_url(PG_URL).set(database=name).render_as_string(hide_password=False)}
    finally:
        with admin.connect() as conn:  # a process that outlived its stack must not keep the database
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def start(env, timeout: float = 120) -> tuple[subprocess.Popen, list[str]]:
    """Start the supervisor; return once its banner is printed. Output keeps being collected."""
    proc = subprocess.Popen([sys.executable, "-m", "services.kit.run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out: list[str] = []
    ready = threading.Event()

    def pump() -> None:  # never let a full pipe block the children
        for line in proc.stdout:
            out.append(line)
            if "try:" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(timeout) or proc.poll() is not None:
        proc.kill()
        raise AssertionError("make run did not come up:\n" + "".join(out))
    return proc, out


@contextmanager
def serving(module: str, env: dict[str, str], port: int, log_path: Path) -> Iterator[str]:
    """One API process (`python -m <module>` on `port`) until the block ends; yields its base URL.
    Its output goes to `log_path` (shown when it does not come up)."""
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        child = Child(module, [sys.executable, "-m", module], f"{base}/healthz")
        child.process = subprocess.Popen(child.args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
    try:
        try:
            wait_healthy(child)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}:\n{log_path.read_text(errors='replace')[-4000:]}") from None
        yield base
    finally:
        child.process.terminate()
        try:
            child.process.wait(10)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def token(env, name: str = "admin") -> str:
    """A key `make run` made and saved under the data directory (admin, dashboard or service)."""
    with open(os.path.join(env["KAOHE_DATA_DIR"], "keys", f"{name}.key")) as fh:
        return fh.read().strip()


def stop(proc, out) -> str:
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    proc.wait(timeout=60)
    time.sleep(0.2)
    return "".join(out)

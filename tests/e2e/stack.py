"""The whole system as `make run` starts it (the supervisor and its processes), for e2e tests."""

import os
import signal
import subprocess
import sys
import threading
import time

from services.kit.broker import free_port

PORTS = ("KAOHE_INTAKE_PORT", "KAOHE_SCORING_PORT", "KAOHE_RANKING_PORT", "KAOHE_NOTIFY_PORT", "KAOHE_BROKER_PORT")


def environment(tmp_path, **extra: str) -> tuple[dict[str, str], dict[str, int]]:
    """Free ports and a scratch data directory; SQLite and the local broker (no outside settings)."""
    ports = {name: free_port() for name in PORTS}
    env = {**os.environ, "KAOHE_DATA_DIR": str(tmp_path / "var"), **{k: str(v) for k, v in ports.items()}, **extra}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("DATABASE_URL", None)
    return env, ports


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


def token(env, name: str = "admin") -> str:
    """A key `make run` made and saved under the data directory (admin, dashboard or service)."""
    with open(os.path.join(env["KAOHE_DATA_DIR"], "keys", f"{name}.key")) as fh:
        return fh.read().strip()


def stop(proc, out) -> str:
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    proc.wait(timeout=60)
    time.sleep(0.2)
    return "".join(out)

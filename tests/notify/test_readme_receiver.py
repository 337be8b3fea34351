"""The receiver the README tells prefectures to copy: run as written, it accepts a delivery
signed the way notify signs, refuses a forged one, and drops a repeated webhook-id."""

import re
import sys
import time
import types
from pathlib import Path

import httpx
import orjson

from services.notify import signing
from tests.http_helpers import serve

README = Path(__file__).resolve().parents[2] / "README.md"


def receiver_app(secret: str, monkeypatch):
    code = re.search(r"```python\n(# pip install standardwebhooks.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    module = types.ModuleType("readme_receiver")
    monkeypatch.setitem(sys.modules, "readme_receiver", module)
    exec(compile(code, "README receiver", "exec"), module.__dict__)  # noqa: S102 - the documented code itself
    return module.app


def test_the_readme_receiver_verifies_deliveries(monkeypatch, capsys):
    secret = signing.new_secret()
    with serve(receiver_app(secret, monkeypatch)) as url:
        body = orjson.dumps({"type": "webhook.ping", "timestamp": "2026-11-21T00:00:00Z", "data": {"n": 1}})
        headers = {**signing.headers([secret], "msg_readme1", int(time.time()), body),
                   "content-type": "application/json"}
        first = httpx.post(f"{url}/kaohe", content=body, headers=headers, timeout=5)
        assert first.status_code == 200 and first.json() == {"ok": True}
        again = httpx.post(f"{url}/kaohe", content=body, headers=headers, timeout=5)
        assert again.json() == {"ok": True, "duplicate": True}
        forged = {**headers, "webhook-id": "msg_readme2",
                  "webhook-signature": signing.headers([signing.new_secret()], "msg_readme2", int(time.time()),
                                                       body)["webhook-signature"]}
        assert httpx.post(f"{url}/kaohe", content=body, headers=forged, timeout=5).status_code == 400
    assert "webhook.ping {'n': 1}" in capsys.readouterr().out

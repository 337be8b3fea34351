"""A webhook receiver on loopback that verifies every delivery with the `standardwebhooks` package
and can be told to fail (any status, Retry-After, a redirect), to hang past the sender's timeout,
or to go away entirely (connection refused) and come back on the same port."""

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.kit.broker import free_port


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    webhook_id: str
    timestamp: int
    signature: str
    body: bytes
    at: float  # time.monotonic() on arrival
    status: int  # what we answered
    verified_with: list[str]  # the secrets (of `Receiver.secrets`) the whole header verifies with
    entries_verified: list[list[str]]  # per signature entry, the secrets that entry alone verifies with

    @property
    def json(self) -> dict:
        return orjson.loads(self.body)


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.secrets: list[str] = []
        self.script: deque[Reply] = deque()  # replies to use first, in order
        self.default = Reply()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request (SIGKILL): nothing was delivered
                    self.close_connection = True
                    return
                reply = receiver._next_reply()
                receiver._record(dict(self.headers.items()), body, reply.status)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up (timeout)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def down(self) -> None:
        """Stop listening: senders get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _next_reply(self) -> Reply:
        with self._lock:
            return self.script.popleft() if self.script else self.default

    def _verified(self, headers: dict[str, str], body: bytes) -> tuple[list[str], list[list[str]]]:
        whole, entries = [], []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                whole.append(secret)
            except WebhookVerificationError:
                pass
        for entry in headers.get("webhook-signature", "").split(" "):
            ok = []
            for secret in self.secrets:
                try:
                    Webhook(secret).verify(body, {**headers, "webhook-signature": entry})
                    ok.append(secret)
                except WebhookVerificationError:
                    pass
            entries.append(ok)
        return whole, entries

    def _record(self, headers: dict[str, str], body: bytes, status: int) -> None:
        headers = {k.lower(): v for k, v in headers.items()}
        whole, entries = self._verified(headers, body)
        with self._lock:
            self.received.append(Received(headers.get("webhook-id", ""), int(headers.get("webhook-timestamp", 0)),
                                          headers.get("webhook-signature", ""), body, time.monotonic(), status,
                                          whole, entries))

    def delivered(self) -> list[Received]:
        """The requests answered 2xx (the deliveries that count)."""
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def of_type(self, type_: str) -> list[Received]:
        return [r for r in self.delivered() if r.json["type"] == type_]

    def close(self) -> None:
        self.down()

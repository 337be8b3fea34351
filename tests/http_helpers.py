"""A FastAPI app served over real HTTP (uvicorn in a thread), for a service that calls another."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from services.kit.broker import free_port


@contextmanager
def serve(app) -> Iterator[str]:
    """Serve `app` on a free local port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)

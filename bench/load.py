"""The background load of the freshness figure, in its own process: new daily checks POSTed to
intake at a steady rate (32 connections) until SIGTERM, then one JSON line with what was sent
and what intake accepted (201) in that time.

    KAOHE_BENCH_TOKEN=kh_... python -m bench.load http://127.0.0.1:8001 --rate 500 --counties 513431,513432
"""

import argparse
import asyncio
import os
import random
import signal
import sys
import time
import uuid
from datetime import datetime, timezone

import httpx
import orjson


def daily_check(county: str, failed: int) -> dict:
    return {"event_id": str(uuid.uuid4()), "type": "daily_check.recorded", "schema_version": 1,
            "occurred_at": datetime.now(timezone.utc).isoformat(), "region_code": county, "source": "bench",
            "payload": {"check_id": f"B-{uuid.uuid4().hex[:12]}", "kind": "work_log", "items_checked": 50,
                        "items_failed": failed}}


async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes) -> int:
    """One POST on a kept-alive HTTP/1.1 connection; the status code."""
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def load(url: str, token: str, rate: float, counties: list[str], connections: int = 32) -> dict:
    """`connections` senders share one schedule (request i is due at i / rate s): when intake keeps
    up, the rate is steady; when it does not, `connections` requests wait and the accepted rate
    shows what it took. Plain HTTP/1.1 over asyncio streams: a general client (httpx) costs about
    3 ms of CPU a request, which on a small machine would be the limit, not intake."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counts = {"sent": 0, "accepted": 0, "refused": 0}
    target = httpx.URL(url)
    head = (f"POST /v1/events HTTP/1.1\r\nHost: {target.host}:{target.port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()
    started = time.monotonic()

    async def sender() -> None:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            while not stop.is_set():
                due = started + counts["sent"] / rate
                counts["sent"] += 1
                if due > time.monotonic():
                    try:
                        await asyncio.wait_for(stop.wait(), due - time.monotonic())
                        return
                    except asyncio.TimeoutError:
                        pass
                status = await post(reader, writer, head, orjson.dumps(daily_check(random.choice(counties), 1)))
                counts["accepted" if status == 201 else "refused"] += 1
        finally:
            writer.close()

    senders = [asyncio.ensure_future(sender()) for _ in range(connections)]
    await stop.wait()
    elapsed = time.monotonic() - started
    for s in senders:  # not waited for: the figure is what intake took in while the probes ran
        s.cancel()
    failed = [r for r in await asyncio.gather(*senders, return_exceptions=True)
              if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)]
    if failed:
        raise failed[0]
    return {**counts, "seconds": elapsed, "accepted_per_s": counts["accepted"] / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--counties", required=True, help="comma-separated county codes")
    args = parser.parse_args()
    result = asyncio.run(load(args.url, os.environ["KAOHE_BENCH_TOKEN"], args.rate, args.counties.split(",")))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()

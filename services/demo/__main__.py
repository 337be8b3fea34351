"""`python -m services.demo`: load the demo years through intake's API, then (with --live) keep
sending new events at a chosen rate so the dashboard can be watched moving (`make demo RATE=200`).

Only the HTTP API is used: nothing is written to a database directly.
"""

import argparse
import random
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone

import httpx

from services.demo.generator import SOURCE, demo_year
from services.kit.access.local import saved_token
from services.kit.settings import Settings

BATCH = 500


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self.done, self.started = label, total, 0, time.monotonic()
        self.accepted = self.duplicates = self.rejected = 0

    def add(self, outcome: dict) -> None:
        self.accepted += outcome.get("accepted", 0)
        self.duplicates += outcome.get("duplicates", 0)
        self.rejected += outcome.get("rejected", 0)
        self.done = self.accepted + self.duplicates + self.rejected
        if not sys.stderr.isatty():
            return  # a log, not a terminal: one line at the end
        self.draw()

    def draw(self) -> None:
        rate = self.done / max(1e-6, time.monotonic() - self.started)
        if self.total:
            filled = int(30 * self.done / self.total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done:,}/{self.total:,}"
        else:
            bar = f"{self.done:,} sent"
        sys.stderr.write(f"\r{self.label} {bar}  {rate:,.0f} events/s  accepted {self.accepted:,} "
                         f"already there {self.duplicates:,} rejected {self.rejected:,}")
        sys.stderr.flush()

    def end(self) -> None:
        self.draw()
        sys.stderr.write("\n")


def send(client: httpx.Client, events: list[dict], progress: Progress) -> None:
    r = client.post("/v1/events/batch", json={"events": events})
    r.raise_for_status()
    outcome = r.json()
    for item in outcome["results"]:
        if item.get("status") == "rejected" or item.get("errors"):
            sys.stderr.write(f"\nrejected: {item}\n")
            break
    progress.add(outcome)


def paced(events: list[dict], rate: float | None):
    """Batches of events, sleeping so that at most `rate` events/s go out."""
    size = BATCH if not rate else max(1, min(BATCH, int(rate / 10) or 1))
    started = time.monotonic()
    for i in range(0, len(events), size):
        if rate:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        yield events[i:i + size]


def load_years(client: httpx.Client, counties: list[dict], years: list[int], rate: float | None) -> None:
    now = datetime.now(timezone.utc)
    for year in years:
        events = demo_year(counties, year, until=now)
        if not events:
            continue
        if client.get(f"/v1/events/{events[-1]['event_id']}").status_code == 200:
            print(f"demo {year}: already loaded ({len(events):,} events)", flush=True)
            continue
        progress = Progress(f"demo {year}", len(events))
        for chunk in paced(events, rate):
            send(client, chunk, progress)
        progress.end()


def live(client: httpx.Client, counties: list[dict], rate: float, limit: int | None) -> None:
    """New inspections now, and the rectification of what they found, at `rate` events/s."""
    rng = random.Random()
    open_findings: list[tuple[str, str, str]] = []  # (county, finding_id, state)
    progress = Progress("live", limit)
    sent = 0
    started = time.monotonic()
    while limit is None or sent < limit:
        now = datetime.now(timezone.utc)
        batch: list[dict] = []
        for _ in range(max(1, int(rate / 5))):
            if open_findings and rng.random() < 0.6:
                county, fid, state = open_findings.pop(rng.randrange(len(open_findings)))
                if state == "open":
                    batch.append(_event("rectification.reported", county, now,
                                        {"finding_id": fid, "evidence": ["photo"]}))
                    open_findings.append((county, fid, "reported"))
                else:
                    verdict = "rectification.verified" if rng.random() < 0.8 else "rectification.rejected"
                    batch.append(_event(verdict, county, now, {"finding_id": fid, "checked_by": "县验收组"}))
                    if verdict.endswith("rejected"):
                        open_findings.append((county, fid, "open"))
            else:
                county = rng.choice(counties)["code"]
                findings = [{"finding_id": f"L-{uuid.uuid4().hex[:12]}", "category": "basic_work",
                             "indicator": rng.choice(["housing", "education", "medical", "road"]),
                             "severity": rng.choices(["minor", "major", "critical"], weights=[6, 3, 1])[0],
                             "description": "现场督查发现问题", "responsible_unit": "县扶贫开发局",
                             "responsible_person": "分管副县长",
                             "deadline": (date.today() + timedelta(days=rng.choice([7, 15, 30]))).isoformat()}
                            for _ in range(rng.randint(0, 3))]
                batch.append(_event("inspection.recorded", county, now, {
                    "inspection_id": f"LI-{uuid.uuid4().hex[:12]}", "mode": "unannounced", "team_id": "team-live",
                    "villages_sampled": 10, "households_sampled": 100, "findings": findings}))
                open_findings += [(county, f["finding_id"], "open") for f in findings]
        if limit is not None:
            batch = batch[:limit - sent]
        send(client, batch, progress)
        sent += len(batch)
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    progress.end()


def _event(type_: str, county: str, moment: datetime, payload: dict) -> dict:
    return {"event_id": str(uuid.uuid4()), "type": type_, "schema_version": 1, "occurred_at": moment.isoformat(),
            "region_code": county, "source": SOURCE, "payload": payload}


def main() -> int:
    settings = Settings()
    this_year = datetime.now(timezone.utc).year
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intake", default=settings.intake_base_url, help="intake's base URL")
    parser.add_argument("--years", default=f"{this_year - 1},{this_year}",
                        help="demo years to load (each up to today), comma-separated")
    parser.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    parser.add_argument("--live", action="store_true", help="after loading, keep sending new events at --rate")
    parser.add_argument("--events", type=int, default=None, help="with --live: stop after this many")
    parser.add_argument("--key", default=settings.service_token or saved_token(settings.data_dir, "service"),
                        help="API key with events:write (default: KAOHE_SERVICE_TOKEN, else the one make run saved)")
    args = parser.parse_args()
    if not args.key:
        parser.error("no API key: start `make run` first (it saves one under var/keys), or pass --key")
    with httpx.Client(base_url=args.intake, timeout=60, headers={"Authorization": f"Bearer {args.key}"}) as client:
        counties = client.get("/v1/regions", params={"level": "county"}).raise_for_status().json()
        load_years(client, counties, [int(y) for y in args.years.split(",") if y], args.rate)
        if args.live:
            try:
                live(client, counties, args.rate or 50.0, args.events)
            except KeyboardInterrupt:
                print("\nstopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

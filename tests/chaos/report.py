"""The chaos table: every fault-injection scenario records one row (events sent, lost,
double-counted, recovery time); pytest prints the table at the end of the session and writes it to
`var/chaos.json`, so `make chaos` (and the short forms in `make test`) end with it.

Lost and double-counted are measured, never assumed: a scenario counts them by comparing what it
sent with what the services hold after recovery (and with a clean recomputation).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    scenario: str
    backend: str  # "sqlite", "postgresql" or "-" (not database-bound)
    sent: int  # events (or requests) sent during the scenario
    lost: int  # accepted but missing afterwards
    doubled: int  # counted more than once afterwards
    recovery_s: float | None  # from the fault's end until everything caught up; None: not applicable
    note: str = ""


ROWS: list[Row] = []  # recorded in this process, not yet in a test's report (tests/conftest.py)


def record(scenario: str, backend: str, *, sent: int, lost: int, doubled: int, recovery_s: float | None,
           note: str = "") -> Row:
    row = Row(scenario, backend, sent, lost, doubled, None if recovery_s is None else round(recovery_s, 1), note)
    ROWS.append(row)
    return row


def drain() -> list[Row]:
    """The rows recorded since the last call, and forget them."""
    rows = ROWS[:]
    ROWS.clear()
    return rows


def table(rows: list[Row]) -> str:
    head = f"{'scenario':<52}{'backend':<12}{'sent':>9}{'lost':>6}{'doubled':>9}{'recovery':>10}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f} s"
        lines.append(f"{r.scenario:<52}{r.backend:<12}{r.sent:>9,}{r.lost:>6}{r.doubled:>9}{recovery:>10}  {r.note}")
    return "\n".join(lines)


def save(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=2) + "\n")

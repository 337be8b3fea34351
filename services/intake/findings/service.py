"""Reading the ledger."""

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from services.intake.findings.ledger import is_overdue
from services.intake.findings.models import FindingState, LedgerEntry, LedgerTransition
from services.intake.regions.service import Place, region_filter
from services.kit.problems import Problem

OPEN_STATES = (FindingState.open, FindingState.reported)


def public(entry: LedgerEntry, today: date) -> dict[str, Any]:
    overdue = is_overdue(entry, today)
    return {**entry.model_dump(), "overdue": overdue, "days_overdue": (today - entry.deadline).days if overdue else 0}


def page(*, session: Session, scope: Place | None, state: str | None, severity: str | None, today: date,
         after: str | None, limit: int) -> list[LedgerEntry]:
    """Findings ordered by id; `state='overdue'` selects open/reported past their deadline."""
    q = select(LedgerEntry)
    if scope is not None:
        q = q.where(region_filter(LedgerEntry.region_code, LedgerEntry.prefecture_code, scope))
    if state == "overdue":
        q = q.where(LedgerEntry.state.in_(OPEN_STATES), LedgerEntry.deadline < today)
    elif state:
        q = q.where(LedgerEntry.state == state)
    if severity:
        q = q.where(LedgerEntry.severity == severity)
    if after is not None:
        q = q.where(LedgerEntry.finding_id > after)
    return list(session.execute(q.order_by(LedgerEntry.finding_id).limit(limit)).scalars())


def get(*, session: Session, finding_id: str) -> tuple[LedgerEntry, list[LedgerTransition]]:
    entry = session.get(LedgerEntry, finding_id)
    if entry is None:
        raise Problem(404, "not-found", "Not found", f"no finding {finding_id!r} in the ledger")
    history = list(session.execute(
        select(LedgerTransition).where(LedgerTransition.finding_id == finding_id)
        .order_by(LedgerTransition.sequence)).scalars())
    return entry, history

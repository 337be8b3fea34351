"""Reading the ledger."""

from datetime import date
from typing import Any

from sqlalchemy import select, tuple_
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
         after: tuple[str, str] | None, limit: int) -> list[LedgerEntry]:
    """Findings ordered by id, then county (ids are unique per county), after the position
    (finding_id, region_code) `after`; `state='overdue'` selects open/reported past their deadline."""
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
        q = q.where(tuple_(LedgerEntry.finding_id, LedgerEntry.region_code) > tuple_(*after))
    return list(session.execute(q.order_by(LedgerEntry.finding_id, LedgerEntry.region_code).limit(limit)).scalars())


def not_found(region_code: str, finding_id: str) -> Problem:
    """The one answer for a finding that is not there, or that the asking key may not see."""
    return Problem(404, "not-found", "Not found", f"no finding {finding_id!r} in the ledger of county {region_code}")


def get(*, session: Session, region_code: str, finding_id: str) -> tuple[LedgerEntry, list[LedgerTransition]]:
    entry = session.get(LedgerEntry, {"region_code": region_code, "finding_id": finding_id})
    if entry is None:
        raise not_found(region_code, finding_id)
    history = list(session.execute(
        select(LedgerTransition)
        .where(LedgerTransition.region_code == region_code, LedgerTransition.finding_id == finding_id)
        .order_by(LedgerTransition.sequence)).scalars())
    return entry, history

"""What each event does to intake's own state, registered in one mapping (type → handler).

A handler runs its checks first and raises a 409 Problem if the ledger does not allow the
event; only then does it return the function that applies it. So a rejected event, even in
the middle of a batch, changes nothing.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from services.events import v1
from services.events.v1 import Envelope
from services.intake.findings.models import FindingState, HouseholdRisk, LedgerEntry, LedgerTransition
from services.intake.regions.models import Region
from services.intake.store.models import NaturalKey
from services.kit.problems import Problem


@dataclass(frozen=True, slots=True)
class Context:
    session: Session
    sequence: int
    prefecture_code: str


Apply = Callable[[], None]
Handler = Callable[[Envelope, Context], Apply]


def conflict(detail: str, **facts: object) -> Problem:
    return Problem(409, "conflict", "Not allowed in the current state", detail, **facts)


def _nothing() -> None:
    return None


# ---- inspections and the ledger ---------------------------------------------------------


def _natural_key_free(ctx: Context, kind: str, key: str) -> None:
    existing = ctx.session.get(NaturalKey, (kind, key))
    if existing is not None:
        raise conflict(f"{kind} {key!r} was already recorded by the event at sequence {existing.sequence}; "
                       "send a new id for a new record", **{f"{kind}_id": key, "sequence": existing.sequence})


def inspection_recorded(event: v1.InspectionRecorded, ctx: Context) -> Apply:
    p = event.payload
    _natural_key_free(ctx, "inspection", p.inspection_id)
    ids = [f.finding_id for f in p.findings]
    if ids:
        taken = list(ctx.session.execute(
            select(LedgerEntry.finding_id).where(LedgerEntry.finding_id.in_(ids))).scalars())
        if taken:
            raise conflict(f"finding ids already in the ledger: {', '.join(sorted(taken))}", finding_ids=taken)

    def apply() -> None:
        s = ctx.session
        s.add(NaturalKey(kind="inspection", key=p.inspection_id, region_code=event.region_code,
                         sequence=ctx.sequence))
        for f in p.findings:
            s.add(LedgerEntry(
                finding_id=f.finding_id, region_code=event.region_code, prefecture_code=ctx.prefecture_code,
                inspection_id=p.inspection_id, team_id=p.team_id, mode=p.mode, category=f.category,
                indicator=f.indicator, severity=f.severity, description=f.description, village_id=f.village_id,
                household_id=f.household_id, responsible_unit=f.responsible_unit,
                responsible_person=f.responsible_person, deadline=f.deadline, state=FindingState.open,
                found_at=event.occurred_at, state_changed_at=event.occurred_at, last_sequence=ctx.sequence,
            ))
            s.add(LedgerTransition(sequence=ctx.sequence, finding_id=f.finding_id, event_type=event.type,
                                   from_state=None, to_state=FindingState.open, occurred_at=event.occurred_at))

    return apply


# (allowed from-states, to-state, what the transition is called) per event type
TRANSITIONS: dict[str, tuple[frozenset[FindingState], FindingState, str]] = {
    "rectification.reported": (frozenset({FindingState.open}), FindingState.reported, "report a fix"),
    "rectification.verified": (frozenset({FindingState.reported}), FindingState.verified, "verify a fix"),
    "rectification.rejected": (frozenset({FindingState.reported}), FindingState.open, "reject a fix"),
    "finding.disputed": (frozenset({FindingState.open}), FindingState.disputed, "dispute a finding"),
    "finding.upheld": (frozenset({FindingState.disputed}), FindingState.open, "uphold a finding"),
    "finding.withdrawn": (frozenset({FindingState.disputed}), FindingState.withdrawn, "withdraw a finding"),
}


def finding_transition(event: Envelope, ctx: Context) -> Apply:
    allowed, to_state, action = TRANSITIONS[event.type]
    finding_id = event.payload.finding_id  # type: ignore[attr-defined]
    entry = ctx.session.get(LedgerEntry, finding_id)
    if entry is None:
        raise conflict(f"finding {finding_id!r} is not in the ledger; it must first be recorded by an "
                       "inspection.recorded event", finding_id=finding_id, current_state=None)
    if entry.region_code != event.region_code:
        raise conflict(f"finding {finding_id!r} belongs to county {entry.region_code}, not {event.region_code}",
                       finding_id=finding_id, finding_region_code=entry.region_code)
    if entry.state not in allowed:
        expected = " or ".join(sorted(f"'{s}'" for s in allowed))
        raise conflict(f"finding {finding_id!r} is '{entry.state}'; {event.type} can {action} only when it is "
                       f"{expected}", finding_id=finding_id, current_state=entry.state,
                       allowed_states=sorted(allowed))
    if event.type == "finding.disputed" and entry.dispute_decided:
        raise conflict(f"finding {finding_id!r} was already disputed and upheld; a decided dispute is final",
                       finding_id=finding_id, current_state=entry.state)
    if event.occurred_at < entry.state_changed_at:
        raise conflict(f"occurred_at {event.occurred_at.isoformat()} is before the finding's last change "
                       f"({entry.state_changed_at.isoformat()}); the ledger moves forward in time",
                       finding_id=finding_id, current_state=entry.state,
                       state_changed_at=entry.state_changed_at.isoformat())

    def apply() -> None:
        from_state = entry.state
        entry.state = to_state
        entry.state_changed_at = event.occurred_at
        entry.last_sequence = ctx.sequence
        if event.type == "rectification.reported":
            entry.reports += 1
        elif event.type == "rectification.rejected":
            entry.rejections += 1
        elif event.type == "finding.upheld":
            entry.dispute_decided = True
        if to_state in (FindingState.verified, FindingState.withdrawn):
            entry.resolved_at = event.occurred_at
        ctx.session.add(LedgerTransition(sequence=ctx.sequence, finding_id=finding_id, event_type=event.type,
                                         from_state=from_state, to_state=to_state, occurred_at=event.occurred_at))

    return apply


# ---- other events -----------------------------------------------------------------------


def daily_check_recorded(event: v1.DailyCheckRecorded, ctx: Context) -> Apply:
    _natural_key_free(ctx, "daily_check", event.payload.check_id)

    def apply() -> None:
        ctx.session.add(NaturalKey(kind="daily_check", key=event.payload.check_id, region_code=event.region_code,
                                   sequence=ctx.sequence))

    return apply


def county_status_changed(event: v1.CountyStatusChanged, ctx: Context) -> Apply:
    region = ctx.session.get(Region, event.region_code)
    assert region is not None  # the directory already checked it is a county
    if region.status == event.payload.status:
        raise conflict(f"county {region.code} ({region.name}) is already '{region.status}'"
                       + (f" since {region.exit_year}" if region.exit_year else ""),
                       current_status=region.status, exit_year=region.exit_year)

    def apply() -> None:
        region.status = event.payload.status
        region.exit_year = event.payload.exit_year
        region.status_basis = "event"
        region.status_sequence = ctx.sequence

    return apply


def return_risk_flagged(event: v1.ReturnRiskFlagged, ctx: Context) -> Apply:
    household = ctx.session.get(HouseholdRisk, event.payload.household_id)
    if household is not None and household.region_code != event.region_code:
        raise conflict(f"household {household.household_id!r} belongs to county {household.region_code}",
                       household_id=household.household_id)

    def apply() -> None:
        if household is None:
            ctx.session.add(HouseholdRisk(household_id=event.payload.household_id, region_code=event.region_code,
                                          flagged=True, last_sequence=ctx.sequence))
        else:  # flagged again (new reasons) or flagged after being cleared
            household.flagged, household.last_sequence = True, ctx.sequence

    return apply


def return_risk_cleared(event: v1.ReturnRiskCleared, ctx: Context) -> Apply:
    household = ctx.session.get(HouseholdRisk, event.payload.household_id)
    if household is None or not household.flagged:
        raise conflict(f"household {event.payload.household_id!r} is not flagged at risk, so it cannot be cleared",
                       household_id=event.payload.household_id, flagged=False)
    if household.region_code != event.region_code:
        raise conflict(f"household {household.household_id!r} belongs to county {household.region_code}",
                       household_id=household.household_id)

    def apply() -> None:
        household.flagged, household.last_sequence = False, ctx.sequence

    return apply


def no_state(event: Envelope, ctx: Context) -> Apply:
    """Events intake only stores and publishes (scoring gives them meaning)."""
    return _nothing


HANDLERS: dict[str, Handler] = {
    "inspection.recorded": inspection_recorded,  # type: ignore[dict-item]
    **{t: finding_transition for t in TRANSITIONS},
    "daily_check.recorded": daily_check_recorded,  # type: ignore[dict-item]
    "year_end_assessment.recorded": no_state,
    "county.status_changed": county_status_changed,  # type: ignore[dict-item]
    "return_risk.flagged": return_risk_flagged,  # type: ignore[dict-item]
    "return_risk.cleared": return_risk_cleared,  # type: ignore[dict-item]
    "inspector.absence_recorded": no_state,
}


def is_overdue(entry: LedgerEntry, today) -> bool:
    """Open or reported past the deadline (BRIEF §3); the deadline day itself is still on time."""
    return entry.state in (FindingState.open, FindingState.reported) and today > entry.deadline


__all__ = ["HANDLERS", "Context", "TRANSITIONS", "conflict", "is_overdue", "datetime"]

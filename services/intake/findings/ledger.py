"""What each event does to intake's own state, registered in one mapping (type → handler).

A handler runs its checks first and raises a 409 Problem if the ledger does not allow the
event; only then does it return the function that applies it. So a rejected event, even in
the middle of a batch, changes nothing.

Handlers read through `Lookups`, which loads everything a batch refers to in a few queries
up front and then sees the batch's own additions: no query (and no autoflush) per event.

The ids partners choose (inspection, daily check, finding, household) are unique within a
county: everything is looked up by (event.region_code, id), so an id another county uses is,
to an event, one that does not exist: no conflict, and no answer that tells the two apart.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlmodel import Session

from services.events import v1
from services.events.v1 import Envelope
from services.intake.findings.models import FindingState, HouseholdRisk, LedgerEntry, LedgerTransition
from services.intake.regions.models import Region
from services.intake.store.keyset import members
from services.intake.store.models import NaturalKey
from services.kit.bulk import insert_rows
from services.kit.problems import Problem

NATURAL_KEYS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "inspection.recorded": ("inspection", lambda p: p.inspection_id),
    "daily_check.recorded": ("daily_check", lambda p: p.check_id),
}


_FINDING = LedgerEntry.__table__
# what a transition changes: written back with one UPDATE per changed finding, all in one executemany
_MUTABLE = ("state", "state_changed_at", "last_sequence", "reports", "rejections", "dispute_decided", "resolved_at")
_UPDATE_FINDING = (update(_FINDING).where(_FINDING.c.region_code == bindparam("b_region_code"),
                                           _FINDING.c.finding_id == bindparam("b_finding_id"))
                   .values({c: bindparam(f"b_{c}") for c in _MUTABLE}))


@dataclass(slots=True)
class Finding:
    """A finding as the ledger's checks read it and its transitions change it (a `finding` row).

    A plain object, not a `LedgerEntry`: a batch touches thousands, and the ORM's per-object
    bookkeeping cost more than the checks. `row` holds the other columns of one recorded in this
    batch (inserted at the flush with its state then); `changed` marks a stored one to update.
    """

    finding_id: str
    region_code: str
    state: str
    state_changed_at: datetime
    reports: int = 0
    rejections: int = 0
    dispute_decided: bool = False
    resolved_at: datetime | None = None
    last_sequence: int = 0
    row: dict[str, Any] | None = None
    changed: bool = False

    def mutable(self) -> dict[str, Any]:
        return {"state": self.state, "state_changed_at": self.state_changed_at, "last_sequence": self.last_sequence,
                "reports": self.reports, "rejections": self.rejections, "dispute_decided": self.dispute_decided,
                "resolved_at": self.resolved_at}


@dataclass(slots=True)
class Lookups:
    """Intake state a batch of events refers to, loaded at once and kept current in memory."""

    session: Session
    # (kind, region_code, id) and (region_code, id): an id is a county's own
    natural_keys: dict[tuple[str, str, str], int] = field(default_factory=dict)
    findings: dict[tuple[str, str], Finding | None] = field(default_factory=dict)
    households: dict[tuple[str, str], HouseholdRisk | None] = field(default_factory=dict)
    regions: dict[str, Region | None] = field(default_factory=dict)
    new_keys: list[dict[str, Any]] = field(default_factory=list)
    new_findings: list[Finding] = field(default_factory=list)
    new_transitions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, session: Session, events: Iterable[Envelope]) -> "Lookups":
        keys, finding_ids, households, regions = set(), set(), set(), set()
        for e in events:
            if e.type in NATURAL_KEYS:
                kind, of = NATURAL_KEYS[e.type]
                keys.add((kind, e.region_code, of(e.payload)))
            if e.type == "inspection.recorded":
                finding_ids.update((e.region_code, f.finding_id) for f in e.payload.findings)
            elif e.type in TRANSITIONS:
                finding_ids.add((e.region_code, e.payload.finding_id))
            elif e.type.startswith("return_risk."):
                households.add((e.region_code, e.payload.household_id))
            elif e.type == "county.status_changed":
                regions.add(e.region_code)
        lookups = cls(session)
        # Each look-up is of the ids alone (the keys' leading columns, one array parameter on
        # PostgreSQL: see keyset), and keeps the rows of the counties that asked; a row of the
        # same id in another county is read and dropped, as if it were not there.
        for kind in {k for k, _, _ in keys}:
            for where in members(session, NaturalKey.key, sorted({key for k, _, key in keys if k == kind})):
                rows = session.execute(select(NaturalKey.region_code, NaturalKey.key, NaturalKey.sequence)
                                       .where(NaturalKey.kind == kind, where))
                lookups.natural_keys.update({(kind, region, key): seq for region, key, seq in rows
                                             if (kind, region, key) in keys})
        lookups.findings = dict.fromkeys(finding_ids)
        c = _FINDING.c
        for where in members(session, c.finding_id, sorted({finding_id for _, finding_id in finding_ids})):
            for row in session.execute(select(c.finding_id, c.region_code, c.state, c.state_changed_at, c.reports,
                                              c.rejections, c.dispute_decided, c.resolved_at, c.last_sequence)
                                       .where(where)):
                if (row.region_code, row.finding_id) in finding_ids:
                    lookups.findings[(row.region_code, row.finding_id)] = Finding(*row)
        lookups.households = dict.fromkeys(households)
        for where in members(session, HouseholdRisk.household_id, sorted({h for _, h in households})):
            for household in session.execute(select(HouseholdRisk).where(where)).scalars():
                if (household.region_code, household.household_id) in households:
                    lookups.households[(household.region_code, household.household_id)] = household
        lookups.regions = {code: session.get(Region, code) for code in regions}
        return lookups

    def flush(self) -> None:
        """Write what handlers added and changed as plain rows (households and regions flush with the session)."""
        insert_rows(self.session, NaturalKey.__table__, self.new_keys)
        insert_rows(self.session, _FINDING, [{**f.row, **f.mutable()} for f in self.new_findings if f.row])
        changed = [{f"b_{k}": v for k, v in f.mutable().items()}
                   | {"b_region_code": f.region_code, "b_finding_id": f.finding_id}
                   for f in self.findings.values() if f is not None and f.changed and f.row is None]
        if changed:
            self.session.execute(_UPDATE_FINDING, changed)
        insert_rows(self.session, LedgerTransition.__table__, self.new_transitions)
        self.new_keys.clear()
        self.new_findings.clear()
        self.new_transitions.clear()
        for f in self.findings.values():
            if f is not None:
                f.row, f.changed = None, False


@dataclass(frozen=True, slots=True)
class Context:
    lookups: Lookups
    sequence: int
    prefecture_code: str


Apply = Callable[[], None]
Handler = Callable[[Envelope, Context], Apply]


def conflict(detail: str, **facts: object) -> Problem:
    return Problem(409, "conflict", "Not allowed in the current state", detail, **facts)


def _nothing() -> None:
    return None


def _natural_key_free(ctx: Context, kind: str, key: str, region_code: str) -> None:
    sequence = ctx.lookups.natural_keys.get((kind, region_code, key))
    if sequence is not None:
        raise conflict(f"{kind} {key!r} was already recorded by the event at sequence {sequence}; "
                       "send a new id for a new record", **{f"{kind}_id": key, "sequence": sequence})


def _take_natural_key(ctx: Context, kind: str, key: str, region_code: str) -> None:
    ctx.lookups.natural_keys[(kind, region_code, key)] = ctx.sequence
    ctx.lookups.new_keys.append({"kind": kind, "key": key, "region_code": region_code, "sequence": ctx.sequence})


def _transition(ctx: Context, finding_id: str, event: Envelope, from_state: str | None,
                to_state: FindingState) -> None:
    ctx.lookups.new_transitions.append({"sequence": ctx.sequence, "finding_id": finding_id,
                                        "region_code": event.region_code, "event_type": event.type,
                                        "from_state": from_state, "to_state": to_state,
                                        "occurred_at": event.occurred_at})


# ---- inspections and the ledger ---------------------------------------------------------


def inspection_recorded(event: v1.InspectionRecorded, ctx: Context) -> Apply:
    p = event.payload
    _natural_key_free(ctx, "inspection", p.inspection_id, event.region_code)
    taken = sorted(f.finding_id for f in p.findings
                   if ctx.lookups.findings.get((event.region_code, f.finding_id)) is not None)
    if taken:
        raise conflict(f"finding ids already in the ledger of county {event.region_code}: {', '.join(taken)}",
                       finding_ids=taken)

    def apply() -> None:
        _take_natural_key(ctx, "inspection", p.inspection_id, event.region_code)
        for f in p.findings:
            entry = Finding(f.finding_id, event.region_code, FindingState.open, event.occurred_at,
                            last_sequence=ctx.sequence, row={
                                "finding_id": f.finding_id, "region_code": event.region_code,
                                "prefecture_code": ctx.prefecture_code, "inspection_id": p.inspection_id,
                                "team_id": p.team_id, "mode": p.mode, "category": f.category,
                                "indicator": f.indicator, "severity": f.severity,
                                "description": f.description, "village_id": f.village_id,
                                "household_id": f.household_id, "responsible_unit": f.responsible_unit,
                                "responsible_person": f.responsible_person, "deadline": f.deadline,
                                "found_at": event.occurred_at})
            ctx.lookups.findings[(event.region_code, f.finding_id)] = entry
            ctx.lookups.new_findings.append(entry)
            _transition(ctx, f.finding_id, event, None, FindingState.open)

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
    entry = ctx.lookups.findings.get((event.region_code, finding_id))
    if entry is None:
        raise conflict(f"finding {finding_id!r} is not in the ledger of county {event.region_code}; it must first "
                       "be recorded there by an inspection.recorded event", finding_id=finding_id, current_state=None)
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
        entry.changed = True
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
        _transition(ctx, finding_id, event, from_state, to_state)

    return apply


# ---- other events -----------------------------------------------------------------------


def daily_check_recorded(event: v1.DailyCheckRecorded, ctx: Context) -> Apply:
    _natural_key_free(ctx, "daily_check", event.payload.check_id, event.region_code)

    def apply() -> None:
        _take_natural_key(ctx, "daily_check", event.payload.check_id, event.region_code)

    return apply


def county_status_changed(event: v1.CountyStatusChanged, ctx: Context) -> Apply:
    region = ctx.lookups.regions.get(event.region_code)
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
    household = ctx.lookups.households.get((event.region_code, event.payload.household_id))

    def apply() -> None:
        if household is None:
            new = HouseholdRisk(household_id=event.payload.household_id, region_code=event.region_code,
                                flagged=True, last_sequence=ctx.sequence)
            ctx.lookups.session.add(new)
            ctx.lookups.households[(new.region_code, new.household_id)] = new
        else:  # flagged again (new reasons) or flagged after being cleared
            household.flagged, household.last_sequence = True, ctx.sequence

    return apply


def return_risk_cleared(event: v1.ReturnRiskCleared, ctx: Context) -> Apply:
    household = ctx.lookups.households.get((event.region_code, event.payload.household_id))
    if household is None or not household.flagged:
        raise conflict(f"household {event.payload.household_id!r} is not flagged at risk in county "
                       f"{event.region_code}, so it cannot be cleared",
                       household_id=event.payload.household_id, flagged=False)

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


__all__ = ["HANDLERS", "Context", "Lookups", "TRANSITIONS", "conflict", "is_overdue"]

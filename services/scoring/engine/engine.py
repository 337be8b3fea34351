"""The scoring engine: (events, policy, as-of time) → scores, with every change explained.

Pure: no FastAPI, SQL or Kafka. The engine keeps raw facts per (county, assessment year) and
computes components from them, so applying events one by one, recomputing from scratch, or
advancing the clock in one step or many all give the same scores. A change is reported as the
difference of a component before and after an event or a clock advance, attributed to its cause.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from sys import intern
from typing import Any, NamedTuple
from uuid import UUID
from zoneinfo import ZoneInfo

from services.events import v1
from services.events.registry import Recorded
from services.events.v1 import Envelope
from services.events.vocabulary import FindingCategory
from services.scoring.engine import view
from services.scoring.policy.model import COMPONENTS, DEDUCTED, Component, Policy

CATEGORIES = tuple(c.value for c in FindingCategory)  # a fixed order for sums: deterministic floats


class Change(NamedTuple):
    """One line of an explanation: a component of a county-year moved by `points` because of `cause`.

    (Named tuples, this and `Score`: immutable like a frozen dataclass, and made in a third of
    its time, about one per event.)"""

    region_code: str
    year: int
    component: Component
    points: float
    rule: str
    cause: str  # an event_id, or "deadline" for time passing
    policy_id: str
    at: datetime


class Score(NamedTuple):
    region_code: str
    year: int
    league: str
    components: dict[str, float | None]  # year_end is None until a result arrives
    total: float
    grade: str
    gated: bool  # the grade was capped by an open critical finding


@dataclass(frozen=True, slots=True)
class Kind:
    """What a finding's category, indicator and severity mean to a score: one object per such
    triple, shared by every finding that has it."""

    category: str
    points: float  # the policy's deduction for its severity
    gate: bool  # critical, on one of the gate's indicators: caps the grade while not verified


@dataclass(slots=True)
class Finding:
    """One finding (a national year holds hundreds of thousands: its county and id are its keys
    in `Engine.findings`, not fields)."""

    year: int
    team_id: str
    kind: Kind
    deadline: date
    state: str = "open"
    rejections: int = 0
    upheld: bool = False
    disputed_on: date | None = None
    resolved_on: date | None = None


@dataclass(slots=True)
class CountyYear:
    """Raw facts of one county-year, and running sums of what its findings contribute.

    The sums are kept finding by finding (its contribution removed before a change and added
    after), so computing the components costs O(findings that can still become overdue).
    """

    county: str
    year: int
    # what the year's visits sampled, in households: each visit's max(households, villages × the
    # policy's households_per_village), summed (one engine per policy: the sum is the policy's)
    sampled: int = 0
    inspections: int = 0
    weighted_failed_items: float = 0.0  # Σ items_failed × kind factor
    # households flagged at risk that cost this year: raised in it, or (a policy that carries flags
    # over) raised in an earlier year and not cleared before this one began
    flagged: set[str] = field(default_factory=set)
    year_end: float | None = None
    points_by_category: dict[str, float] = field(default_factory=dict)  # severity points, not withdrawn
    rejections: int = 0  # failed fixes of findings not withdrawn
    settled_overdue: float = 0.0  # overdue points of verified and disputed findings: fixed on that day
    # deadline day number → how many open/reported findings have it (per finding, this was a
    # national year's largest dict after the findings themselves)
    accruing: dict[int, int] = field(default_factory=dict)
    open_critical: int = 0  # unresolved critical findings on the gate's indicators
    # what the accruing findings owe on day `overdue_day` (-1: not computed), in whole numbers so
    # that adding and removing findings in any order gives exactly the same sum: findings at their
    # cap, and the days overdue of the others
    overdue_day: int = -1
    overdue_capped: int = 0
    overdue_days: int = 0


class Ids:
    """A set of UUIDs in about 18 bytes each (a set of 128-bit ints costs about 85: a national
    year's million events would hold 85 MB for this alone): their 16 bytes appended to one of
    65,536 byte strings chosen by their last two bytes, and found with `bytes.find` (aligned)."""

    __slots__ = ("_buckets", "_count")

    def __init__(self) -> None:
        self._buckets: list[bytearray | None] = [None] * 65536
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, uid: UUID) -> bool:
        bucket = self._buckets[uid.int & 0xFFFF]
        return bucket is not None and _holds(bucket, uid.bytes)

    def add(self, uid: UUID) -> bool:
        """Add `uid`; False if it was there already."""
        slot, raw = uid.int & 0xFFFF, uid.bytes
        bucket = self._buckets[slot]
        if bucket is None:
            bucket = self._buckets[slot] = bytearray()
        elif _holds(bucket, raw):
            return False
        bucket += raw
        self._count += 1
        return True


def _holds(bucket: bytearray, raw: bytes) -> bool:
    """Is `raw` one of the 16-byte ids laid end to end in `bucket`?"""
    at = bucket.find(raw)
    while at >= 0 and at % 16:  # a match straddling two ids: look on
        at = bucket.find(raw, at + 1)
    return at >= 0


class Engine:
    """Scores of every county-year, kept current as events arrive and time passes."""

    def __init__(self, policy: Policy, statuses: Mapping[str, str], start: datetime, *,
                 exit_years: Mapping[str, int | None] | None = None) -> None:
        self.policy = policy
        self.tz = ZoneInfo(policy.timezone)
        self.as_of = start
        self.initial_status = dict(statuses)
        # county → the year of its baseline exit (a baseline `exited` county before it was in poverty)
        self.exit_years = {c: y for c, y in (exit_years or {}).items() if y is not None}
        self.status_changes: dict[str, list[tuple[datetime, str]]] = {}
        self.applied = Ids()  # event ids
        self.years: dict[tuple[str, int], CountyYear] = {}
        # county → finding id → finding: partners choose finding ids, unique within a county only (two
        # counties may each have an F-0001). A dict per county, not a (county, id) key: a tuple a
        # finding would cost a national year's half a million findings about 30 MB
        self.findings: dict[str, dict[str, Finding]] = {}
        self.absences: list[tuple[str, str, bool, str]] = []  # (team, inspector, approved, county)
        self.county_absences: dict[str, list[tuple[str, str, bool, str]]] = {}
        self.risk_year: dict[str, dict[str, int]] = {}  # county → household → year of its open flag (ids per county)
        # a policy that carries flags over: county → household → its cleared flags' spans of years
        # [flagged, lifted), and county → its latest county-year
        self.risk_spans: dict[str, dict[str, list[tuple[int, int]]]] = {}
        self.last_year: dict[str, int] = {}
        self._carried: list[tuple[tuple[str, int], dict, dict]] = []  # county-years created with flags, for lines
        self.critical = frozenset(policy.gates.critical_indicators)
        # a team's findings in a county (the only index of findings by team or county: a national
        # year holds hundreds of thousands of findings, and two more indexes cost tens of MB)
        self.team_county_findings: dict[tuple[str, str], list[str]] = {}  # (team, county) → finding ids
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}  # one tuple per (team, county), shared
        self._dates: dict[date, date] = {}  # one date object per day, shared by findings
        self._years: dict[int, int] = {}
        self._kinds: dict[tuple[str, str, str], Kind] = {}
        self.team_changes: set[tuple[str, str]] = set()  # (team, county) whose points moved since drained
        # (county, year) → the last event that may have moved its score since drained: a score can move
        # with no component moving (a league, a gate, a first row), so this, not the changes, says
        # which rows to compare with what is stored
        self.touched: dict[tuple[str, int], str] = {}
        self.due: dict[int, list[tuple[str, str]]] = {}  # deadline day → (team, county) of its findings
        self._leagues: dict[tuple[str, int], str] = {}  # (county, year) → league; cleared on a status change
        # components of each county-year at `as_of`, kept current by _touch and advance (what
        # changes them): an event costs one evaluation of its county-year, not two
        self.current: dict[tuple[str, int], dict[str, float | None]] = {}
        self._today = (start, self.local_date(start))
        self._terms = _Terms(policy)

    # ---- time and leagues ------------------------------------------------------------------

    def local_date(self, moment: datetime) -> date:
        return moment.astimezone(self.tz).date()

    def _shared(self, day: date) -> date:
        """`day` as the one object the engine keeps for it (findings keep dates by the hundred thousand)."""
        return self._dates.setdefault(day, day)

    def _kind(self, category: str, indicator: str, severity: str) -> Kind:
        key = (category, indicator, severity)
        kind = self._kinds.get(key)
        if kind is None:
            kind = self._kinds[key] = Kind(category, self.policy.inspections.severity[severity],
                                           severity == "critical" and indicator in self.critical)
        return kind

    def _pair(self, team: str, county: str) -> tuple[str, str]:
        pair = (team, county)
        return self._pairs.setdefault(pair, pair)

    def today(self) -> date:
        """The local date of `as_of` (remembered: every component evaluation asks for it)."""
        if self._today[0] != self.as_of:
            self._today = (self.as_of, self.local_date(self.as_of))
        return self._today[1]

    def year_of(self, moment: datetime) -> int:
        year = self.local_date(moment).year
        return self._years.setdefault(year, year)  # one int object per year (findings keep theirs)

    def league(self, county: str, year: int) -> str:
        """The county's status at the end of `year`: its baseline (a baseline exit counts from its
        exit year on), then the status-change events applied before the year ended."""
        known = self._leagues.get((county, year))
        if known is not None:
            return known
        end = datetime(year + 1, 1, 1, tzinfo=self.tz)
        status = self.initial_status.get(county, "in_poverty")
        if status == "exited" and year < self.exit_years.get(county, year):
            status = "in_poverty"  # the years before its baseline exit year (none known: exited in every year)
        for moment, new in self.status_changes.get(county, ()):
            if moment < end:
                status = new
        self._leagues[(county, year)] = status
        return status

    # ---- components --------------------------------------------------------------------------

    def overdue_points(self, f: Finding, today: date) -> float:
        """From the day after the deadline until verified (or today); in dispute, what it owed on the
        day disputed if the policy freezes it (`dispute_freezes_overdue`), else nothing; nothing if
        withdrawn."""
        rules = self.policy.rectification
        if f.state == "withdrawn" or (f.state == "disputed" and not self._terms.freeze):
            return 0.0
        end = f.resolved_on if f.state == "verified" else f.disputed_on if f.state == "disputed" else today
        days = (end - f.deadline).days
        return min(rules.overdue_cap_per_finding, days * rules.overdue_per_day) if days > 0 else 0.0

    def components(self, cy: CountyYear, as_of: datetime | None = None) -> dict[str, float | None]:
        t = self._terms
        league = self.league(cy.county, cy.year)
        today = self.local_date(as_of) if as_of is not None else self.today()
        daily = t.per_failed_item * cy.weighted_failed_items + t.alert[league] * len(cy.flagged)
        points = 0  # summed in CATEGORIES' order, as the engine always has: the same floats
        if by_category := cy.points_by_category:
            for c, factor in t.factors[league]:
                if (value := by_category.get(c)) is not None:
                    points += factor * value
        rectification = cy.rejections * t.rejected + cy.settled_overdue + self._accrued(cy, today, as_of is None)
        # findings per sampled household: a team that samples more does not make a county look worse
        inspections = points * t.reference_households / max(cy.sampled, t.min_households)
        return {
            "daily_management": 100.0 - min(t.cap_daily, daily),
            "inspections": 100.0 - min(t.cap_inspections, inspections),
            "rectification": 100.0 - min(t.cap_rectification, rectification),
            "year_end": cy.year_end,
        }

    def _accrued(self, cy: CountyYear, today: date, keep: bool) -> float:
        """What the open/reported findings of `cy` owe on `today` (as overdue_points, with the
        deadlines kept as day numbers). `keep`: remember the counts for today, so that events
        adjust them (`_accrue`) instead of summing every open finding again."""
        day = today.toordinal()
        if cy.overdue_day == day:
            capped, days = cy.overdue_capped, cy.overdue_days
        else:
            capped = days = 0
            for deadline, count in cy.accruing.items():
                late = day - deadline
                if late >= self._terms.cap_days:
                    capped += count
                elif late > 0:
                    days += count * late
            if keep:
                cy.overdue_day, cy.overdue_capped, cy.overdue_days = day, capped, days
        rules = self.policy.rectification
        return capped * rules.overdue_cap_per_finding + days * rules.overdue_per_day

    def _accrue(self, cy: CountyYear, deadline: int, sign: int) -> None:
        """A finding with `deadline` starts (+1) or stops (−1) accruing: adjust the kept counts."""
        if cy.overdue_day < 0:
            return
        late = cy.overdue_day - deadline
        if late >= self._terms.cap_days:
            cy.overdue_capped += sign
        elif late > 0:
            cy.overdue_days += sign * late

    def account(self, cy: CountyYear, f: Finding, sign: int) -> None:
        """Add (+1) or remove (−1) what finding `f`, in its current state, contributes to `cy`."""
        if f.state == "withdrawn":
            return  # a withdrawn finding contributes nothing, anywhere
        kind = f.kind
        cy.points_by_category[kind.category] = cy.points_by_category.get(kind.category, 0.0) + sign * kind.points
        cy.rejections += sign * f.rejections
        if f.state == "verified" or (f.state == "disputed" and self._terms.freeze):  # fixed that day
            cy.settled_overdue += sign * self.overdue_points(f, f.resolved_on)
        elif f.state in ("open", "reported"):
            deadline = f.deadline.toordinal()
            if sign > 0:
                cy.accruing[deadline] = cy.accruing.get(deadline, 0) + 1
                self._accrue(cy, deadline, +1)
            elif (count := cy.accruing.get(deadline)) is not None:
                if count > 1:
                    cy.accruing[deadline] = count - 1
                else:
                    del cy.accruing[deadline]
                self._accrue(cy, deadline, -1)
        if kind.gate and f.state != "verified":
            cy.open_critical += sign

    def score(self, county: str, year: int) -> Score:
        t = self._terms
        cy = self.years.get((county, year))
        league = self.league(county, year)
        comps = self._current((county, year)) if cy else self.components(CountyYear(county, year))
        # the weighted mean of the components present, summed in COMPONENTS' order
        weight_sum = total = 0
        for c, weight in t.weights[league]:
            if (value := comps[c]) is not None:
                weight_sum += weight
                total += weight * value
        total = min(100.0, max(0.0, total / weight_sum if weight_sum else 0.0))
        for least, grade in t.grades:
            if total >= least:
                break
        gated = False
        if cy is not None and cy.open_critical > 0 and t.rank[grade] < t.gate_rank:
            grade, gated = t.gate_grade, True
        return Score(county, year, league, comps, round(total, 4), grade, gated)

    # ---- applying events ---------------------------------------------------------------------

    def apply(self, record: Recorded, cause: str | None = None) -> list[Change]:
        """Apply one stored event; an event already applied changes nothing. `cause`: the event's
        id as text, if the caller has it already."""
        return self.apply_new(record, cause) or []

    def apply_new(self, record: Recorded, cause: str | None = None) -> list[Change] | None:
        """`apply`, saying None for an event already applied."""
        event = record.event
        if not self.applied.add(event.event_id):
            return None
        handler = HANDLERS.get(event.type)
        if handler is None:
            return []
        touched, rule = handler(self, event)
        cause = cause or view.id_text(event.event_id)
        changes = touched(cause, rule, event.occurred_at) if touched else []
        if self._carried:  # the flags a county-year the event began was booked with
            carried = [c for key, before, after in self._carried
                       for c in self._diff(key, before, after, "daily_management.return_risk_carried", cause,
                                           event.occurred_at)]
            self._carried.clear()
            changes = carried + changes
        return changes

    def has(self, event_id: UUID) -> bool:
        """Was this event applied?"""
        return event_id in self.applied

    def advance(self, as_of: datetime) -> list[Change]:
        """Move the clock forward: overdue rectifications lose points with no event arriving."""
        if as_of <= self.as_of:
            return []
        # a finding not disputed in time earns its team a point once its deadline has passed
        day, before_day = self.local_date(as_of).toordinal(), self.today().toordinal()
        passed = range(before_day, day) if day - before_day <= len(self.due) else \
            [d for d in self.due if before_day <= d < day]
        for deadline in passed:
            self.team_changes.update(self.due.get(deadline, ()))
        # only open/reported findings past their deadline move with time (the rest are settled)
        pending = {key for key, cy in self.years.items() if cy.accruing and min(cy.accruing) < day}
        before = {key: self._current(key) for key in pending}
        self.as_of = as_of
        changes: list[Change] = []
        for key in sorted(pending):
            after = self.current[key] = self.components(self.years[key])
            changes += self._diff(key, before[key], after, "rectification.overdue", "deadline", as_of)
        return changes

    def _current(self, key: tuple[str, int]) -> dict[str, float | None]:
        comps = self.current.get(key)
        if comps is None:
            comps = self.current[key] = self.components(self.years[key])
        return comps

    def _cy(self, county: str, year: int) -> CountyYear:
        key = (county, year)
        cy = self.years.get(key)
        if cy is None:
            cy = self.years[key] = CountyYear(county, year)
            if self._terms.carry:
                self._begin(cy)
        return cy

    def _begin(self, cy: CountyYear) -> None:
        """A county-year's first event, under a policy that carries flags over: book the households
        flagged in an earlier year and not cleared before this one (lines: `_carried`)."""
        county, year = cy.county, cy.year
        if year > self.last_year.get(county, year - 1):
            self.last_year[county] = year
        households = {h for h in (*self.risk_year.get(county, ()), *self.risk_spans.get(county, ()))
                      if self.flagged_in(county, h, year)}
        if households:
            key = (county, year)
            before = self.components(cy)
            cy.flagged.update(households)
            self._carried.append((key, before, self.components(cy)))

    def flagged_in(self, county: str, household: str, year: int) -> bool:
        """Whether `household` costs `year` under a policy that carries flags over: flagged in it or
        before, and not cleared before it began (or in it)."""
        flagged_in = self.risk_year.get(county, {}).get(household)
        if flagged_in is not None and flagged_in <= year:
            return True
        return any(a <= year < b for a, b in self.risk_spans.get(county, {}).get(household, ()))

    def years_from(self, county: str, year: int) -> list[tuple[str, int]]:
        """The county-years of `county` from `year` on that exist."""
        return [(county, y) for y in range(year, self.last_year.get(county, year - 1) + 1) if (county, y) in self.years]

    def _diff(self, key: tuple[str, int], before: dict, after: dict, rule: str, cause: str,
              at: datetime) -> list[Change]:
        if before == after:  # (about half the events: a step that moves no component, compared in C)
            return []
        out = []
        for c in COMPONENTS:
            b, a = before[c], after[c]
            if b != a:
                delta = (a or 0.0) - (b or 0.0) if c == "year_end" else a - b
                out.append(Change(key[0], key[1], c, delta, rule, cause, self.policy.id, at))
        return out

    def _touch(self, keys: list[tuple[str, int]]) -> Callable[[str, str, datetime], list[Change]]:
        """Snapshot the components of `keys` now; the returned function diffs them after the change."""
        if len(keys) == 1:  # (nearly every event: one county-year)
            return self._touch_one(keys[0])
        keys = sorted(set(keys))
        for k in keys:
            self._cy(*k)
        before = {k: self._current(k) for k in keys}

        def finish(cause: str, rule: str, at: datetime) -> list[Change]:
            changes: list[Change] = []
            for k in keys:
                self.touched[k] = cause
                after = self.current[k] = self.components(self.years[k])
                changes += self._diff(k, before[k], after, rule, cause, at)
            return changes

        return finish

    def _touch_one(self, key: tuple[str, int]) -> Callable[[str, str, datetime], list[Change]]:
        cy = self._cy(*key)
        before = self._current(key)

        def finish(cause: str, rule: str, at: datetime) -> list[Change]:
            self.touched[key] = cause
            after = self.current[key] = self.components(cy)
            return self._diff(key, before, after, rule, cause, at)

        return finish

    # ---- inspector points (积分制) ------------------------------------------------------------

    def finding_credit(self, f: Finding, today: date) -> int:
        """+1 for a finding upheld, or not disputed by its deadline; nothing if withdrawn."""
        if f.state == "withdrawn":
            return 0
        if f.upheld:
            return 1
        if f.disputed_on is not None and f.disputed_on <= f.deadline:
            return 0  # disputed in time: wait for the decision
        return 1 if today > f.deadline else 0

    def inspector_points(self, team_id: str) -> dict[str, Any]:
        today = self.local_date(self.as_of)
        findings = sum(self.finding_credit(self.findings[county][fid], today)
                       for (team, county), ids in self.team_county_findings.items() if team == team_id
                       for fid in ids)
        absences: dict[str, int] = {}
        for team, inspector, approved, _county in self.absences:
            if team == team_id and not approved:
                absences[inspector] = absences.get(inspector, 0) + 1
        return team_detail(team_id, findings, absences)

    def counties(self) -> set[str]:
        """Every county this engine holds facts of."""
        return {c for c, _ in self.years} | {c for _, c in self.team_county_findings} | set(self.county_absences)

    def drain_team_changes(self) -> set[tuple[str, str]]:
        """The (team, county) pairs whose points may have moved since the last call: by events, or
        by time passing a deadline."""
        changed, self.team_changes = self.team_changes, set()
        return changed

    def drain_touched(self) -> dict[tuple[str, int], str]:
        """The county-years events may have moved since the last call, each with the last such event
        (time moves only components: a clock advance's changes name what it moved)."""
        touched, self.touched = self.touched, {}
        return touched

    def team_points(self, team_id: str, county: str) -> tuple[int, dict[str, int]]:
        """What one team earned in one county: (findings credited, unapproved absences by inspector)."""
        today = self.local_date(self.as_of)
        in_county = self.findings.get(county, {})
        credited = sum(self.finding_credit(in_county[fid], today)
                       for fid in self.team_county_findings.get((team_id, county), ()))
        absences: dict[str, int] = {}
        for team, inspector, approved, _ in self.county_absences.get(county, ()):
            if team == team_id and not approved:
                absences[inspector] = absences.get(inspector, 0) + 1
        return credited, absences

    def team_points_in(self, county: str) -> dict[str, tuple[int, dict[str, int]]]:
        """What each team earned in one county: (findings credited, unapproved absences by inspector).

        A team's points are the sum over counties, so workers that each own some counties can
        each store their part. (Scans every (team, county): for all counties, `all_team_points`.)
        """
        return {team: points for (team, c), points in self.all_team_points() if c == county}

    def all_team_points(self) -> Iterator[tuple[tuple[str, str], tuple[int, dict[str, int]]]]:
        """`team_points` of every (team, county) with findings or absences, in order, one by one."""
        pairs = set(self.team_county_findings) | {(team, county) for team, _, _, county in self.absences}
        for pair in sorted(pairs):
            yield pair, self.team_points(*pair)


def team_detail(team_id: str, findings_credited: int, absences: Mapping[str, int]) -> dict[str, Any]:
    """积分制: +1 per finding credited, −2 per unapproved absence, with each inspector's part."""
    total_absences = sum(absences.values())
    return {"team_id": team_id, "points": findings_credited - 2 * total_absences,
            "findings_credited": findings_credited, "unapproved_absences": total_absences,
            "inspectors": {i: {"points": -2 * n, "unapproved_absences": n} for i, n in sorted(absences.items())}}


# ---- handlers: one per event type, each returning (diff-after function, rule) ---------------

Handled = tuple[Callable[[str, str, datetime], list[Change]] | None, str]


def _inspection(engine: Engine, e: v1.InspectionRecorded) -> Handled:
    year = engine.year_of(e.occurred_at)
    finish = engine._touch_one((e.region_code, year))
    cy = engine._cy(e.region_code, year)
    cy.inspections += 1
    sampled = e.payload.households_sampled
    if engine._terms.per_village:
        sampled = max(sampled, e.payload.villages_sampled * engine._terms.per_village)
    cy.sampled += sampled
    if not e.payload.findings:
        return finish, "inspections.clean_visit"
    # one string object per county and team, however many findings name it (memory: a national
    # year holds hundreds of thousands of findings)
    county, team = intern(e.region_code), intern(e.payload.team_id)
    in_county = engine.findings.setdefault(county, {})
    for f in e.payload.findings:
        if f.finding_id in in_county:
            continue
        finding = Finding(year, team, engine._kind(f.category, f.indicator, f.severity), engine._shared(f.deadline))
        in_county[f.finding_id] = finding
        pair = engine._pair(team, county)
        engine.team_county_findings.setdefault(pair, []).append(f.finding_id)
        engine.team_changes.add(pair)
        engine.due.setdefault(f.deadline.toordinal(), []).append(pair)
        engine.account(cy, finding, +1)
    return _late_on_arrival(finish), "inspections.findings"


def _late_on_arrival(finish: Callable[[str, str, datetime], list[Change]]) -> Callable[[str, str, datetime],
                                                                                      list[Change]]:
    """An inspection moves the rectification component only by findings recorded after their
    deadline, already overdue: those lines are booked under the overdue rule (their cause stays
    the inspection), not as the inspection's findings."""

    def finish_late(cause: str, rule: str, at: datetime) -> list[Change]:
        return [c._replace(rule="rectification.overdue") if c.component == "rectification" else c
                for c in finish(cause, rule, at)]

    return finish_late


def _transition(engine: Engine, e: Envelope) -> Handled:
    # the event's county's finding: ids are unique per county, not across counties
    in_county = engine.findings.get(e.region_code)
    f = in_county.get(e.payload.finding_id) if in_county is not None else None  # type: ignore[attr-defined]
    if f is None:
        return None, ""  # intake validated it; a consumer that joined mid-stream may lack the inspection
    key = (e.region_code, f.year)
    finish = engine._touch_one(key)
    cy = engine.years[key]
    engine.account(cy, f, -1)
    engine.team_changes.add(engine._pair(f.team_id, e.region_code))
    day = engine._shared(engine.local_date(e.occurred_at))
    rule = e.type  # each step's rule is named after it
    if e.type == "rectification.reported":
        f.state = "reported"
    elif e.type == "rectification.verified":
        f.state, f.resolved_on = "verified", day
    elif e.type == "rectification.rejected":
        f.state, f.rejections = "open", f.rejections + 1
    elif e.type == "finding.disputed":
        f.state, f.disputed_on = "disputed", day
    elif e.type == "finding.upheld":
        f.state, f.upheld = "open", True
    elif e.type == "finding.withdrawn":
        f.state, f.resolved_on = "withdrawn", day
    engine.account(cy, f, +1)
    return finish, rule


def _daily_check(engine: Engine, e: v1.DailyCheckRecorded) -> Handled:
    key = (e.region_code, engine.year_of(e.occurred_at))
    finish = engine._touch_one(key)
    factor = engine.policy.daily_management.kind_factor[e.payload.kind]
    engine._cy(*key).weighted_failed_items += e.payload.items_failed * factor
    return finish, "daily_management.failed_items"


def _year_end(engine: Engine, e: v1.YearEndAssessmentRecorded) -> Handled:
    key = (e.region_code, e.payload.year)
    finish = engine._touch_one(key)
    engine._cy(*key).year_end = e.payload.score  # a correction is a later event: the latest wins
    return finish, "year_end.result"


def _status(engine: Engine, e: v1.CountyStatusChanged) -> Handled:
    year = engine.year_of(e.occurred_at)
    keys = [k for k in engine.years if k[0] == e.region_code and k[1] >= year] or [(e.region_code, year)]
    finish = engine._touch(keys)
    engine.status_changes.setdefault(e.region_code, []).append((e.occurred_at, e.payload.status))
    engine.status_changes[e.region_code].sort(key=lambda x: x[0])
    engine._leagues.clear()
    return finish, f"league.{e.payload.status}"


def _risk_flagged(engine: Engine, e: v1.ReturnRiskFlagged) -> Handled:
    household = e.payload.household_id
    flags = engine.risk_year.setdefault(e.region_code, {})  # household ids are unique per county
    if household in flags:
        return None, ""  # already flagged: new reasons, same alert
    year = engine.year_of(e.occurred_at)
    # carried over: also every later year of the county already begun
    keys = sorted({(e.region_code, year), *engine.years_from(e.region_code, year)}) if engine._terms.carry \
        else [(e.region_code, year)]
    finish = engine._touch(keys)
    for key in keys:
        engine.years[key].flagged.add(household)
    flags[household] = year
    return finish, "daily_management.return_risk"


def _risk_cleared(engine: Engine, e: v1.ReturnRiskCleared) -> Handled:
    flags = engine.risk_year.get(e.region_code)
    year = flags.pop(e.payload.household_id, None) if flags is not None else None
    if year is None:
        return None, ""
    household, cleared = e.payload.household_id, engine.year_of(e.occurred_at)
    if not engine._terms.carry:
        if year != cleared:
            return None, ""  # cleared in a later year: the year it was raised keeps its deduction
        keys = [(e.region_code, year)]
    else:
        # the years before the clear's keep it; the clear's year and those after are lifted
        lifted = max(year, cleared)
        if lifted > year:
            engine.risk_spans.setdefault(e.region_code, {}).setdefault(household, []).append((year, lifted))
        keys = [key for key in engine.years_from(e.region_code, lifted)
                if household in engine.years[key].flagged and not engine.flagged_in(e.region_code, household, key[1])]
        if not keys:
            return None, ""
    finish = engine._touch(keys)
    for key in keys:
        engine.years[key].flagged.discard(household)
    return finish, "daily_management.return_risk_cleared"


def _absence(engine: Engine, e: v1.InspectorAbsenceRecorded) -> Handled:
    absence = (e.payload.team_id, e.payload.inspector_id, e.payload.approved, e.region_code)
    engine.absences.append(absence)
    engine.county_absences.setdefault(e.region_code, []).append(absence)
    engine.team_changes.add((e.payload.team_id, e.region_code))
    return None, ""


HANDLERS: dict[str, Callable[[Engine, Any], Handled]] = {
    "inspection.recorded": _inspection,
    "rectification.reported": _transition,
    "rectification.verified": _transition,
    "rectification.rejected": _transition,
    "finding.disputed": _transition,
    "finding.upheld": _transition,
    "finding.withdrawn": _transition,
    "daily_check.recorded": _daily_check,
    "year_end_assessment.recorded": _year_end,
    "county.status_changed": _status,
    "return_risk.flagged": _risk_flagged,
    "return_risk.cleared": _risk_cleared,
    "inspector.absence_recorded": _absence,
}


class _Terms:
    """The numbers of a policy the engine reads for every event, component and score, read out of
    the policy's models once (per league: in COMPONENTS' and CATEGORIES' order, the order of the sums)."""

    __slots__ = ("per_failed_item", "alert", "factors", "rejected", "reference_households", "min_households",
                 "cap_daily", "cap_inspections", "cap_rectification", "weights", "grades", "rank", "gate_grade",
                 "gate_rank", "cap_days", "freeze", "per_village", "carry")

    def __init__(self, policy: Policy) -> None:
        daily, inspections = policy.daily_management, policy.inspections
        self.per_failed_item = daily.points_per_failed_item
        self.alert = dict(daily.return_risk_alert)
        self.factors = {league: tuple((c, factors[c]) for c in CATEGORIES)
                        for league, factors in inspections.category_factor.items()}
        self.rejected = policy.rectification.rejected
        self.reference_households, self.min_households = inspections.reference_households, inspections.min_households
        caps = policy.caps
        self.cap_daily, self.cap_inspections, self.cap_rectification = (caps.daily_management, caps.inspections,
                                                                        caps.rectification)
        self.weights = {league: tuple((c, getattr(w, c)) for c in COMPONENTS) for league, w in policy.weights.items()}
        self.grades = tuple((g.min, g.name) for g in policy.grades)  # from the highest band down; the last from 0
        self.rank = {name: policy.grade_rank(name) for _, name in self.grades}
        self.gate_grade = policy.gates.max_grade_with_open_critical
        self.gate_rank = self.rank[self.gate_grade]
        rules = policy.rectification
        self.cap_days = _days_to_cap(rules.overdue_per_day, rules.overdue_cap_per_finding)  # days overdue to the cap
        self.freeze = rules.dispute_freezes_overdue
        self.per_village = inspections.households_per_village
        self.carry = daily.return_risk_carries_over


def _days_to_cap(per_day: float, cap: float) -> int:
    """Days overdue from which a finding owes its cap: the fewest n with n × per_day ≥ cap (as
    min(cap, n × per_day) decides it in floating point)."""
    if per_day <= 0:
        return 1 << 62  # never (nothing accrues)
    n = max(1, int(cap // per_day))
    while n > 1 and (n - 1) * per_day >= cap:
        n -= 1
    while n * per_day < cap:
        n += 1
    return n


def prefecture_total(scores: Iterable[Score]) -> float | None:
    """The policy's aggregate (mean) of a prefecture's county totals; None with no county scored."""
    totals = [s.total for s in scores]
    return round(sum(totals) / len(totals), 4) if totals else None


__all__ = ["COMPONENTS", "Change", "CountyYear", "DEDUCTED", "Engine", "Finding", "HANDLERS", "Ids", "Kind", "Score",
           "prefecture_total", "team_detail"]

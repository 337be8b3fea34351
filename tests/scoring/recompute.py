"""The check every scoring reliability test ends with: the stored scores equal a clean
recomputation from intake's event store, and no explanation line counts twice."""

import orjson
from sqlalchemy import Engine as Database
from sqlalchemy import select
from sqlmodel import Session

from services.events.registry import decode_record
from services.intake.store.service import export
from services.scoring import store
from services.scoring.engine.engine import Engine
from services.scoring.models import ScoreRow, TeamPoints, WorkerClock
from services.scoring.policy.model import shipped


def assert_matches_clean_recomputation(intake: Database, scoring: Database) -> Engine:
    """Every county and prefecture score as a fresh engine computes it from intake's export, at the
    worker's clock; each component's explanation lines add up to what it lost. Returns the engine."""
    with Session(scoring) as s:
        as_of = s.get(WorkerClock, 1).as_of
        statuses, exit_years = store.counties(s), store.exit_years(s)
        rows = {(r.region_code, r.year): r for r in s.execute(select(ScoreRow)).scalars()}
        team_rows = s.execute(select(TeamPoints)).scalars().all()
        lines: dict[tuple[str, int, str], float] = {}
        for _, county, year, line in store.explanation_lines(s):
            key = (county, year, line.component)
            lines[key] = lines.get(key, 0.0) + line.points
    clean = Engine(shipped(), statuses, start=store.EPOCH, exit_years=exit_years)
    for chunk in export(intake, after_sequence=0):
        for line in chunk.splitlines():
            clean.apply(decode_record(line))
    clean.advance(as_of)
    assert {k for k, r in rows.items() if r.level == "county"} == set(clean.years)
    for (county, year) in clean.years:
        expected, got = clean.score(county, year), rows[(county, year)]
        assert (got.total, got.grade, got.gated, got.league, orjson.loads(got.components)) == (
            expected.total, expected.grade, expected.gated, expected.league, expected.components), (county, year)
    for prefecture, year in {(store.prefecture_of(c), y) for c, y in clean.years}:
        assert rows[(prefecture, year)].total == store.prefecture_score(clean, prefecture, year).total
    for (county, year, component), points in lines.items():
        if component != "year_end":
            lost = 100 - orjson.loads(rows[(county, year)].components)[component]
            assert abs(lost + points) < 1e-6, (county, year, component)
    # team points are stored per county (each worker writes its counties'): their sums are the teams'
    teams = ({f.team_id for in_county in clean.findings.values() for f in in_county.values()}
             | {a[0] for a in clean.absences})
    stored: dict[str, list[int]] = {}
    for r in team_rows:
        unapproved = sum(orjson.loads(r.absences).values())
        stored.setdefault(r.team_id, [0, 0])
        stored[r.team_id][0] += r.findings_credited
        stored[r.team_id][1] += unapproved
    assert {t: (p["findings_credited"], p["unapproved_absences"])
            for t in teams if (p := clean.inspector_points(t))} == {t: tuple(v) for t, v in stored.items()}
    return clean

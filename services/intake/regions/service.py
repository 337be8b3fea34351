"""Regions: loading the shipped data, lookups, and the directory intake validates against."""

import re
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, select
from sqlmodel import Session

from services.events.v1 import REGION_CODE
from services.intake.regions.models import Region
from services.kit.access.principal import NATIONAL
from services.kit.problems import InvalidEvent, Problem

DATA_FILE = "data/sichuan.json"


LEVELS = {"province": None, "prefecture": "province", "county": "prefecture"}  # level -> its parent's level
COUNTY_STATUSES = ("in_poverty", "exited")


def shipped_regions() -> dict[str, Any]:
    return orjson.loads(resources.files("services.intake.regions").joinpath(DATA_FILE).read_bytes())


def regions_file(path: Path) -> dict[str, Any]:
    """Regions from a JSON file in the shipped data's shape (`KAOHE_REGIONS_FILE`), checked first:
    a set-up that loaded half a bad file would leave intake judging events against it."""
    data = orjson.loads(Path(path).read_bytes())
    regions = data.get("regions") if isinstance(data, dict) else None
    if not isinstance(regions, list) or not regions:
        raise ValueError(f"{path}: no 'regions' list")
    levels = {}
    for r in regions:
        code, level = r.get("code"), r.get("level")
        if not (isinstance(code, str) and re.fullmatch(REGION_CODE, code)) or level not in LEVELS \
                or not isinstance(r.get("name"), str) or code in levels:
            raise ValueError(f"{path}: bad or repeated region {r!r}")
        levels[code] = level
    for r in regions:
        parent, wanted = r.get("parent_code"), LEVELS[r["level"]]
        if (parent is None) != (wanted is None) or (parent is not None and levels.get(parent) != wanted):
            raise ValueError(f"{path}: {r['code']} ({r['level']}) needs {'a ' + wanted if wanted else 'no'} parent, "
                             f"has {parent!r}")
        if r["level"] == "county" and r.get("status") not in COUNTY_STATUSES:
            raise ValueError(f"{path}: county {r['code']} has status {r.get('status')!r}, not one of {COUNTY_STATUSES}")
    return data


def load(*, session: Session, data: dict[str, Any] | None = None) -> int:
    """Insert the regions that are missing; existing rows (and statuses events set) are kept."""
    data = data or shipped_regions()
    existing = set(session.execute(select(Region.code)).scalars())
    added = 0
    for r in data["regions"]:
        if r["code"] in existing:
            continue
        session.add(Region(
            code=r["code"], name=r["name"], level=r["level"], parent_code=r.get("parent_code"),
            status=r.get("status"), exit_year=r.get("exit_year"), poverty_county=r.get("poverty_county"),
            status_basis=r.get("status_basis"), baseline_status=r.get("status"),
            baseline_exit_year=r.get("exit_year"),
        ))
        added += 1
    session.flush()
    return added


@dataclass(frozen=True, slots=True)
class Place:
    code: str
    level: str
    parent_code: str | None
    prefecture_code: str | None  # for a county: its prefecture; for a prefecture: itself


NATIONAL_PLACE = Place(NATIONAL, "national", None, None)  # every province: a key's scope, not a region


class Directory:
    """Region codes → place, cached: codes and parents never change at run time (statuses do)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._places: dict[str, Place] = {}
        self._lock = threading.Lock()

    def _reload(self) -> None:
        with Session(self.engine) as s:
            rows = s.execute(select(Region.code, Region.level, Region.parent_code)).all()
        places = {}
        for code, level, parent in rows:
            prefecture = code if level == "prefecture" else parent if level == "county" else None
            places[code] = Place(code, level, parent, prefecture)
        with self._lock:
            self._places = places

    def provinces(self) -> set[str]:
        """The two-digit prefixes of the provinces loaded (read again: regions may be loaded later)."""
        self._reload()
        return {code[:2] for code, place in self._places.items() if place.level == "province"}

    def known(self, code: str) -> bool:
        """Without a reload: for checks on the event loop (an unknown code is judged later)."""
        return code in self._places

    def get(self, code: str) -> Place | None:
        place = self._places.get(code)
        if place is None:
            self._reload()  # regions may have been loaded after we started
            place = self._places.get(code)
        return place

    def county(self, code: str) -> Place:
        """The county `code` names, or a 422 naming region_code."""
        place = self.get(code)
        if place is None or place.level != "county":
            raise not_a_county(code, None if place is None else place.level)
        return place

    def scope(self, code: str) -> Place:
        """Any known region (a filter scope), the national scope, or 404."""
        if code == NATIONAL:
            return NATIONAL_PLACE
        place = self.get(code)
        if place is None:
            raise Problem(404, "not-found", "Not found", f"unknown region {code}")
        return place


def not_a_county(code: str, level: str | None = None, event_id: str | None = None) -> InvalidEvent:
    """The 422 of an event whose region_code is no county: one that does not exist (`level` None),
    or a province's or prefecture's code. A region outside the sender's key gets the first, word for
    word, so that its existence is not revealed."""
    what = "not a known region" if level is None else f"a {level}, not a county"
    return InvalidEvent([{"field": "region_code", "pointer": "/region_code", "type": "unknown_county",
                          "message": f"{code} is {what}; events are recorded against a county"}],
                        detail=f"region_code: {code} is {what}", event_id=event_id)


def region_filter(column_county: Any, column_prefecture: Any, place: Place) -> Any:
    """A WHERE clause selecting rows of a county, of a prefecture's or a province's counties, or
    (the national scope) everything. A province is a range of county codes: 510000 holds 51xxxx."""
    if place.level == "county":
        return column_county == place.code
    if place.level == "prefecture":
        return column_prefecture == place.code
    if place.level == "province":
        return column_county.between(place.code[:2] + "0000", place.code[:2] + "9999")
    return True


def list_regions(*, session: Session, level: str | None, parent: str | None, status: str | None) -> list[Region]:
    q = select(Region)
    if level:
        q = q.where(Region.level == level)
    if parent:
        q = q.where(Region.parent_code == parent)
    if status:
        q = q.where(Region.status == status)
    return list(session.execute(q.order_by(Region.code)).scalars())


def get_region(*, session: Session, code: str) -> tuple[Region, Region | None, list[Region]]:
    region = session.get(Region, code)
    if region is None:
        raise Problem(404, "not-found", "Not found", f"unknown region {code}")
    parent = session.get(Region, region.parent_code) if region.parent_code else None
    children = list(session.execute(
        select(Region).where(Region.parent_code == code).order_by(Region.code)).scalars())
    return region, parent, children

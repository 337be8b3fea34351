"""The scoring policy: data, versioned, validated. Loaded from TOML or JSON (POST /v1/policies)."""

import math
import tomllib
from importlib import resources
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from services.events.errors import errors_at
from services.events.vocabulary import CountyStatus, DailyCheckKind, FindingCategory, Indicator, Severity

Component = Literal["daily_management", "inspections", "rectification", "year_end"]
COMPONENTS: tuple[Component, ...] = ("daily_management", "inspections", "rectification", "year_end")
DEDUCTED: tuple[Component, ...] = ("daily_management", "inspections", "rectification")
# strict: a number is a JSON number (an int where a whole number is meant), never "10" or true
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
Percent = Annotated[float, Field(ge=0, le=100, strict=True)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _covers(name: str, mapping: dict, enum: type) -> None:
    missing = sorted(e.value for e in enum if e.value not in mapping)
    unknown = sorted(k for k in mapping if k not in {e.value for e in enum})
    if missing or unknown:
        raise ValueError(f"{name} must cover exactly {[e.value for e in enum]}"
                         + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))


class Weights(Strict):
    daily_management: NonNegative
    inspections: NonNegative
    rectification: NonNegative
    year_end: NonNegative

    @model_validator(mode="after")
    def _sum_to_one(self) -> "Weights":
        total = sum(getattr(self, c) for c in COMPONENTS)
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"weights must sum to 1 (they sum to {total:g})")
        return self


class Caps(Strict):
    daily_management: Percent
    inspections: Percent
    rectification: Percent


class DailyManagement(Strict):
    points_per_failed_item: NonNegative
    kind_factor: dict[str, NonNegative]
    return_risk_alert: dict[str, NonNegative]
    # a household still flagged when a year begins costs that year too, and each later one until
    # cleared (true); or only the year of its flag (false: default-v1 and -v2's rule; optional, so
    # policies stored before it load and compute as they did)
    return_risk_carries_over: StrictBool = False

    @field_validator("kind_factor")
    @classmethod
    def _kinds(cls, v: dict) -> dict:
        _covers("daily_management.kind_factor", v, DailyCheckKind)
        return v

    @field_validator("return_risk_alert")
    @classmethod
    def _leagues(cls, v: dict) -> dict:
        _covers("daily_management.return_risk_alert", v, CountyStatus)
        return v


class Inspections(Strict):
    reference_households: Annotated[StrictInt, Field(ge=1)]
    min_households: Annotated[StrictInt, Field(ge=1)]
    # a visit's sample is max(households, villages × this): a village visited counts as this many
    # households (0: villages count for nothing, default-v1's rule; optional, so policies stored
    # before it load and compute as they did)
    households_per_village: Annotated[StrictInt, Field(ge=0, le=10_000)] = 0
    severity: dict[str, NonNegative]
    category_factor: dict[str, dict[str, NonNegative]]

    @field_validator("severity")
    @classmethod
    def _severities(cls, v: dict) -> dict:
        _covers("inspections.severity", v, Severity)
        return v

    @field_validator("category_factor")
    @classmethod
    def _categories(cls, v: dict) -> dict:
        _covers("inspections.category_factor", v, CountyStatus)
        for league, factors in v.items():
            _covers(f"inspections.category_factor.{league}", factors, FindingCategory)
        return v


class Rectification(Strict):
    rejected: NonNegative
    overdue_per_day: NonNegative
    overdue_cap_per_finding: NonNegative
    withdrawn_deducts: Literal[False] = False  # the brief: a withdrawn finding deducts nothing
    # a finding in dispute keeps the lateness it owed on the day disputed (true), or owes none
    # while disputed (false: default-v1's rule; optional, so policies stored before it load and
    # compute as they did)
    dispute_freezes_overdue: StrictBool = False


class YearEnd(Strict):
    when_missing: Literal["renormalise"] = "renormalise"


class Gates(Strict):
    critical_indicators: list[Indicator]
    max_grade_with_open_critical: str


class Grade(Strict):
    name: str
    label: str
    min: Percent


class Prefecture(Strict):
    aggregate: Literal["mean"] = "mean"


class Policy(Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*-v[0-9]+$", max_length=64)]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    version: Annotated[StrictInt, Field(ge=1)]
    description: str = ""
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "Asia/Shanghai"
    weights: dict[str, Weights]
    caps: Caps
    daily_management: DailyManagement
    inspections: Inspections
    rectification: Rectification
    year_end: YearEnd = YearEnd()
    gates: Gates
    grades: list[Grade]
    prefecture: Prefecture = Prefecture()

    @field_validator("weights")
    @classmethod
    def _weights_per_league(cls, v: dict) -> dict:
        _covers("weights", v, CountyStatus)
        return v

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        # the engine dates every deadline and assessment year in it: a name it cannot load would
        # stop the worker at the policy's activation, not here
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"not a time zone the system knows (an IANA name, e.g. Asia/Shanghai): {v!r}") from None
        return v

    @field_validator("grades")
    @classmethod
    def _grades_ordered(cls, grades: list[Grade]) -> list[Grade]:
        if not grades:
            raise ValueError("at least one grade band is needed")
        mins = [g.min for g in grades]
        if mins != sorted(mins, reverse=True) or len(set(mins)) != len(mins):
            raise ValueError("grades must be listed from the highest band down, with distinct minimums")
        if grades[-1].min != 0:
            raise ValueError("the lowest grade must start at 0 so every score has a grade")
        return grades

    @model_validator(mode="after")
    def _consistent(self) -> "Policy":
        """Checks across fields, each error placed at the field to change (not at the whole body)."""
        errors = []
        if not self.id.endswith(f"-v{self.version}") or not self.id.startswith(self.name):
            errors.append((("id",), "value_error", f"id must be '<name>-v<version>' ({self.name}-v{self.version})",
                           self.id))
        if self.gates.max_grade_with_open_critical not in {g.name for g in self.grades}:
            errors.append((("gates", "max_grade_with_open_critical"), "value_error", "must name one of the grades",
                           self.gates.max_grade_with_open_critical))
        if errors:
            raise errors_at(type(self).__name__, errors)
        return self

    def grade_rank(self, name: str) -> int:
        """0 for the best grade; larger is worse."""
        return [g.name for g in self.grades].index(name)


def load_toml(text: str) -> Policy:
    return Policy.model_validate(tomllib.loads(text))


DEFAULT = "default-v3"  # the shipped policy in force unless configured otherwise (kit Settings.scoring_policy)


def shipped(name: str = DEFAULT) -> Policy:
    """A policy file shipped in services/scoring/policies/: the default one unless named."""
    return load_toml(resources.files("services.scoring").joinpath(f"policies/{name}.toml").read_text("utf-8"))

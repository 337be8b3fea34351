"""The policy is data: the shipped default loads, and every invalid variant names its fault."""

import tomllib
from importlib import resources

import pytest
from pydantic import ValidationError

from services.scoring.policy.model import Policy, shipped

RAW = tomllib.loads(resources.files("services.scoring").joinpath("policies/default-v1.toml").read_text("utf-8"))


def variant(path: str, value=None, *, delete: bool = False) -> dict:
    import copy

    data = copy.deepcopy(RAW)
    node = data
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    if delete:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return data


def test_default_policy_loads():
    p = shipped()
    assert p.id == "default-v1" and p.version == 1
    assert p.weights["exited"].inspections < p.weights["in_poverty"].inspections
    assert p.inspections.category_factor["exited"]["stable_exit"] > p.inspections.category_factor["in_poverty"][
        "stable_exit"]
    assert p.daily_management.return_risk_alert["exited"] > p.daily_management.return_risk_alert["in_poverty"]


@pytest.mark.parametrize("path, value, message", [
    ("weights.in_poverty.inspections", 0.5, "sum to 1"),
    ("caps.inspections", -1, "greater than or equal to 0"),
    ("rectification.overdue_per_day", -0.5, "greater than or equal to 0"),
    ("inspections.severity", {"minor": 1, "major": 2}, "missing ['critical']"),
    ("inspections.category_factor.exited", {"basic_work": 1}, "missing"),
    ("daily_management.kind_factor", {"registry_accuracy": 1, "team_presence": 1, "work_log": 1, "x": 1}, "unknown"),
    ("weights", {"in_poverty": RAW["weights"]["in_poverty"]}, "missing ['exited']"),
    ("gates.max_grade_with_open_critical", "excellent", "one of the grades"),
    ("id", "default-v2", "<name>-v<version>"),
    ("grades", list(reversed(RAW["grades"])), "highest band down"),
    ("timezone", "Mars/Olympus", "not a time zone"),
    ("timezone", "../../etc/passwd", "not a time zone"),
])
def test_invalid_policies_are_rejected_with_the_reason(path, value, message):
    with pytest.raises(ValidationError) as err:
        Policy.model_validate(variant(path, value))
    assert message in str(err.value)


def test_unknown_keys_are_rejected():
    with pytest.raises(ValidationError):
        Policy.model_validate({**RAW, "bonus": 5})


@pytest.mark.parametrize("path, value, loc", [
    ("id", "default-v2", ("id",)),
    ("gates.max_grade_with_open_critical", "excellent", ("gates", "max_grade_with_open_critical")),
    ("timezone", "Mars/Olympus", ("timezone",)),
])
def test_each_fault_is_placed_at_the_field_to_change(path, value, loc):
    with pytest.raises(ValidationError) as err:
        Policy.model_validate(variant(path, value))
    assert [e["loc"] for e in err.value.errors()] == [loc]

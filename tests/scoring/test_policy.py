"""The policy is data: the shipped default loads, and every invalid variant names its fault."""

import tomllib
from importlib import resources

import pytest
from pydantic import ValidationError

from services.kit.settings import Settings
from services.scoring.policy.model import DEFAULT, Policy, shipped

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
    assert p.id == "default-v3" and p.version == 3
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
    ("inspections.households_per_village", -1, "greater than or equal to 0"),
    ("inspections.households_per_village", True, "valid integer"),  # strict: true is no count
    ("inspections.households_per_village", 10.0, "valid integer"),
    ("inspections.households_per_village", "10", "valid integer"),
    ("rectification.dispute_freezes_overdue", 1, "valid boolean"),  # strict: 1 is no flag
    ("rectification.dispute_freezes_overdue", "yes", "valid boolean"),
    ("rectification.dispute_freezes_overdue", None, "valid boolean"),
    ("daily_management.return_risk_carries_over", 1, "valid boolean"),
    ("daily_management.return_risk_carries_over", "true", "valid boolean"),
])
def test_invalid_policies_are_rejected_with_the_reason(path, value, message):
    with pytest.raises(ValidationError) as err:
        Policy.model_validate(variant(path, value))
    assert message in str(err.value)


def test_the_default_policy_is_the_one_the_services_are_configured_with_by_default():
    # kit's settings may not import scoring: the default is named twice, and must be the same file
    assert Settings.model_fields["scoring_policy"].default == DEFAULT == shipped().id


def test_a_policy_without_the_fields_added_since_loads_with_v1s_rules():
    """Policies stored over the API before households_per_village, dispute_freezes_overdue and
    return_risk_carries_over existed load, and compute as they did: villages do not count, a dispute
    owes no lateness, a flag costs its own year only."""
    data = variant("inspections.households_per_village", delete=True)
    del data["rectification"]["dispute_freezes_overdue"]
    assert "return_risk_carries_over" not in data["daily_management"]  # v1's file predates it
    p = Policy.model_validate(data)
    assert p.inspections.households_per_village == 0 and p.rectification.dispute_freezes_overdue is False
    assert p.daily_management.return_risk_carries_over is False
    assert p == shipped("default-v1")


def test_default_v2_is_default_v1_with_its_two_rules_changed():
    v1, v2 = shipped("default-v1").model_dump(), shipped("default-v2").model_dump()
    assert (v2["id"], v2["version"]) == ("default-v2", 2)
    assert (v1["inspections"]["households_per_village"], v1["rectification"]["dispute_freezes_overdue"]) == (0, False)
    assert (v2["inspections"]["households_per_village"], v2["rectification"]["dispute_freezes_overdue"]) == (10, True)
    # seed 002: 10 villages x 10 households is the reference sample
    assert v2["inspections"]["households_per_village"] * 10 == v2["inspections"]["reference_households"]
    for p in (v1, v2):
        del p["id"], p["version"], p["description"]
        del p["inspections"]["households_per_village"], p["rectification"]["dispute_freezes_overdue"]
    assert v1 == v2


def test_default_v3_is_default_v2_carrying_flags_over():
    v2, v3 = shipped("default-v2").model_dump(), shipped("default-v3").model_dump()
    assert (v3["id"], v3["version"]) == ("default-v3", 3)
    assert (v2["daily_management"]["return_risk_carries_over"], v3["daily_management"]["return_risk_carries_over"]) \
        == (False, True)
    for p in (v2, v3):
        del p["id"], p["version"], p["description"], p["daily_management"]["return_risk_carries_over"]
    assert v2 == v3


def test_unknown_keys_are_rejected():
    with pytest.raises(ValidationError):
        Policy.model_validate({**RAW, "bonus": 5})


@pytest.mark.parametrize("path, value, loc", [
    ("id", "default-v2", ("id",)),
    ("gates.max_grade_with_open_critical", "excellent", ("gates", "max_grade_with_open_critical")),
    ("timezone", "Mars/Olympus", ("timezone",)),
    ("inspections.households_per_village", -1, ("inspections", "households_per_village")),
    ("rectification.dispute_freezes_overdue", "yes", ("rectification", "dispute_freezes_overdue")),
    ("daily_management.return_risk_carries_over", 0, ("daily_management", "return_risk_carries_over")),
])
def test_each_fault_is_placed_at_the_field_to_change(path, value, loc):
    with pytest.raises(ValidationError) as err:
        Policy.model_validate(variant(path, value))
    assert [e["loc"] for e in err.value.errors()] == [loc]


def test_shipped_policies_are_listed_by_version_not_as_text():
    from services.scoring.policy_store import _by_version

    assert sorted(["default-v10", "default-v2", "other-v1", "default-v1"], key=_by_version) == [
        "default-v1", "default-v2", "default-v10", "other-v1"]

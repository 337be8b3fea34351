"""Which policies exist (shipped files and versions added over the API) and which is active.

In force: the policy activated over the API if any; else the configured one (KAOHE_SCORING_POLICY)
as the scoring worker started last declared it (`declare_configured`, `ConfiguredPolicy`); else,
before any worker declared one, the asking process's own setting (`default`)."""

from datetime import datetime, timezone
from importlib import resources

import orjson
from sqlalchemy import select, update
from sqlmodel import Session

from services.kit.problems import Problem
from services.scoring.models import ConfiguredPolicy, StoredPolicy
from services.scoring.policy.model import Policy, shipped


def shipped_ids() -> list[str]:
    folder = resources.files("services.scoring").joinpath("policies")
    ids = [f.name.removesuffix(".toml") for f in folder.iterdir() if f.name.endswith(".toml")]
    return sorted(ids, key=_by_version)


def _by_version(policy_id: str) -> tuple[str, int]:
    """default-v2 before default-v10 (ids are '<name>-v<version>')."""
    name, _, version = policy_id.rpartition("-v")
    return name, int(version) if version.isdigit() else 0


def get(session: Session, policy_id: str) -> Policy:
    if policy_id in shipped_ids():
        return shipped(policy_id)
    row = session.get(StoredPolicy, policy_id)
    if row is None:
        configured = session.get(ConfiguredPolicy, 1)
        if configured is not None and configured.policy_id == policy_id:  # a file a newer image ships
            return Policy.model_validate(orjson.loads(configured.body))
        raise Problem(404, "not-found", "Not found", f"no policy {policy_id!r}")
    return Policy.model_validate(orjson.loads(row.body))


def configured_id(session: Session, default: str) -> str:
    """The configured policy as the worker started last declared it (`default` before any did)."""
    row = session.get(ConfiguredPolicy, 1)
    return row.policy_id if row is not None else default


def declare_configured(session: Session, policy: Policy, now: datetime) -> str | None:
    """A starting worker's configured policy becomes the configured one for every worker; returns
    the one it replaces (None if it was already, or if none was declared before)."""
    row = session.get(ConfiguredPolicy, 1)
    if row is None:
        session.add(ConfiguredPolicy(id=1, policy_id=policy.id, body=policy.model_dump_json(), configured_at=now))
        return None
    if row.policy_id == policy.id:
        return None
    replaced = row.policy_id
    row.policy_id, row.body, row.configured_at = policy.id, policy.model_dump_json(), now
    return replaced


def _activated(session: Session) -> str | None:
    """The policy activated over the API, if any."""
    return session.execute(select(StoredPolicy.id).where(StoredPolicy.active.is_(True))).scalar_one_or_none()


def active_id(session: Session, default: str) -> str:
    return _activated(session) or configured_id(session, default)


def listing(session: Session, default: str) -> list[dict]:
    configured, ids = configured_id(session, default), shipped_ids()
    active = _activated(session) or configured
    out = [{"id": i, "source": "shipped", "active": i == active, "configured": i == configured} for i in ids]
    if configured not in ids:  # declared by a worker of a newer image
        out.append({"id": configured, "source": "shipped", "active": configured == active, "configured": True})
    for row in session.execute(select(StoredPolicy).order_by(StoredPolicy.created_at)).scalars():
        out.append({"id": row.id, "source": "api", "active": row.id == active, "configured": False,
                    "created_at": row.created_at.isoformat()})
    return out


def add(session: Session, policy: Policy) -> None:
    configured = session.get(ConfiguredPolicy, 1)
    if policy.id in shipped_ids() or session.get(StoredPolicy, policy.id) is not None or \
            (configured is not None and configured.policy_id == policy.id):
        raise Problem(409, "conflict", "Policy exists", f"policy {policy.id!r} exists; a change is a new version",
                      policy_id=policy.id)
    session.add(StoredPolicy(id=policy.id, body=policy.model_dump_json(), created_at=datetime.now(timezone.utc),
                             active=False))


def activate(session: Session, policy_id: str, default: str) -> None:
    """Make `policy_id` the active policy; within about a second the worker starts recomputing every score."""
    get(session, policy_id)  # 404 if unknown
    default = configured_id(session, default)
    if policy_id in shipped_ids() and policy_id != default:
        raise Problem(409, "conflict", "Not activatable", f"{policy_id!r} is a shipped file: choose it with "
                      "KAOHE_SCORING_POLICY, or add it over the API as a new version", policy_id=policy_id)
    session.execute(update(StoredPolicy).values(active=False))
    if policy_id != default:
        session.execute(update(StoredPolicy).where(StoredPolicy.id == policy_id).values(active=True))

"""Keys for one machine (`make run`): made once, kept under the data directory, reused after."""

import os
from pathlib import Path

from services.kit.access.keys import Access

# name -> (scopes, what it is for); all province-wide
LOCAL_KEYS = {
    "admin": (["admin"], "you: every scope, creates partner keys"),
    "dashboard": (["events:read", "scores:read", "standings:read"], "the dashboard in the browser (read only)"),
    "service": (["events:read", "events:write"], "the workers (intake's regions and export) and the demo loader"),
}
PROVINCE = "510000"


def saved_token(data_dir: Path, name: str) -> str | None:
    """A local key's token as `make run` saved it, if it did."""
    path = data_dir / "keys" / f"{name}.key"
    return path.read_text().strip() if path.exists() else None


def local_keys(access: Access, data_dir: Path) -> dict[str, str]:
    """name -> token, reusing the tokens saved in `<data_dir>/keys/<name>.key` while they still work."""
    folder = data_dir / "keys"
    folder.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for name, (scopes, _purpose) in LOCAL_KEYS.items():
        path = folder / f"{name}.key"
        token = path.read_text().strip() if path.exists() else ""
        if not token or access.authenticate(token) is None:
            _row, token = access.create(name=f"local {name}", scopes=scopes, region=PROVINCE,
                                        rate_limit_per_min=10_000_000)
            path.write_text(token + "\n")
            os.chmod(path, 0o600)
        tokens[name] = token
    return tokens

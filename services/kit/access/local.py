"""Keys for one machine (`make run`): made once, kept under the data directory, reused after."""

import os
from pathlib import Path
from typing import Any

import orjson

from services.kit.access.keys import Access
from services.kit.access.principal import NATIONAL

# name -> (scopes, what it is for); each for every region loaded (`region_of`)
LOCAL_KEYS = {
    "admin": (["admin"], "you: every scope, creates partner keys"),
    "dashboard": (["events:read", "scores:read", "standings:read"], "the dashboard in the browser (read only)"),
    "service": (["events:read", "events:write"], "the workers (intake's regions and export) and the demo loader"),
}
PROVINCE = "510000"  # the shipped regions: Sichuan


def file_regions(regions_file: Path | None) -> list[dict[str, Any]] | None:
    """The regions of `KAOHE_REGIONS_FILE` (intake's set-up checks the file), or None: the shipped Sichuan."""
    return orjson.loads(Path(regions_file).read_bytes())["regions"] if regions_file else None


def region_of(regions: list[dict[str, Any]] | None) -> str:
    """The region the local keys cover: the one province of the regions loaded (`file_regions`;
    None: the shipped Sichuan), or the national scope when they hold several."""
    if regions is None:
        return PROVINCE
    provinces = [r["code"] for r in regions if r.get("level") == "province"]
    return provinces[0] if len(provinces) == 1 else NATIONAL


def saved_token(data_dir: Path, name: str) -> str | None:
    """A local key's token as `make run` saved it, if it did."""
    path = data_dir / "keys" / f"{name}.key"
    return path.read_text().strip() if path.exists() else None


def local_keys(access: Access, data_dir: Path, region: str = PROVINCE) -> dict[str, str]:
    """name -> token, reusing the tokens saved in `<data_dir>/keys/<name>.key` while they still work
    and are for `region` (a new regions file makes new keys)."""
    folder = data_dir / "keys"
    folder.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for name, (scopes, _purpose) in LOCAL_KEYS.items():
        path = folder / f"{name}.key"
        token = path.read_text().strip() if path.exists() else ""
        held = access.authenticate(token) if token else None
        if held is None or held.region != region:
            if held is not None:  # made for other regions; its file is overwritten next, so nobody needs it
                access.revoke(held.key_id)
            _row, token = access.create(name=f"local {name}", scopes=scopes, region=region,
                                        rate_limit_per_min=10_000_000)
            path.write_text(token + "\n")
            os.chmod(path, 0o600)
        tokens[name] = token
    return tokens

"""A national region set for the big benchmark runs, in the shape of intake's shipped data.

31 provinces with their real GB/T 2260 prefixes (11 Beijing … 65 Xinjiang); Sichuan (51) is the
shipped, real data; the other 30 are generated with their real number of prefecture-level
divisions (333 in all, rounded) and about their real number of county-level divisions (≈2,850
in all), coded PPNN00 for prefectures and PPNNCC for counties. About 832 of them are poverty
counties (the real national figure) with exit years 2016–2020, so both leagues are populated at
the 2019-01-01 baseline. Deterministic (seeded). Names are placeholders.

    python -m bench.regions national.json   # then KAOHE_REGIONS_FILE=national.json make run
"""

import random
import sys
from pathlib import Path

import orjson

from services.intake.regions.service import shipped_regions

SICHUAN = "51"
# prefix: (name, prefecture-level divisions, county-level divisions) — 2023 counts, a few rounded
PROVINCES = {
    "11": ("北京市", 1, 16), "12": ("天津市", 1, 16), "13": ("河北省", 11, 167), "14": ("山西省", 11, 117),
    "15": ("内蒙古自治区", 12, 103), "21": ("辽宁省", 14, 100), "22": ("吉林省", 9, 60),
    "23": ("黑龙江省", 13, 121), "31": ("上海市", 1, 16), "32": ("江苏省", 13, 95), "33": ("浙江省", 11, 90),
    "34": ("安徽省", 16, 104), "35": ("福建省", 9, 84), "36": ("江西省", 11, 100), "37": ("山东省", 16, 136),
    "41": ("河南省", 16, 157), "42": ("湖北省", 12, 103), "43": ("湖南省", 14, 122), "44": ("广东省", 21, 122),
    "45": ("广西壮族自治区", 14, 111), "46": ("海南省", 3, 25), "50": ("重庆市", 1, 38), "51": ("四川省", 21, 183),
    "52": ("贵州省", 9, 88), "53": ("云南省", 16, 129), "54": ("西藏自治区", 7, 74), "61": ("陕西省", 10, 107),
    "62": ("甘肃省", 14, 86), "63": ("青海省", 8, 44), "64": ("宁夏回族自治区", 5, 22),
    "65": ("新疆维吾尔自治区", 13, 106),
}
POVERTY_SHARE = 832 / 2850
BASELINE_YEAR = 2019  # statuses as of 2019-01-01, like the shipped data


def national_regions(seed: int = 7) -> dict:
    """The whole set: {"dataset", "baseline", "sources", "regions": [...]} like sichuan.json."""
    rng = random.Random(seed)
    regions: list[dict] = []
    for prefix, (name, prefectures, counties) in PROVINCES.items():
        if prefix == SICHUAN:
            regions += shipped_regions()["regions"]
            continue
        regions.append({"code": f"{prefix}0000", "name": name, "level": "province", "parent_code": None})
        short = name[:2]
        per, extra = divmod(counties, prefectures)
        for p in range(1, prefectures + 1):
            prefecture = f"{prefix}{p:02d}00"
            regions.append({"code": prefecture, "name": f"{short}{p:02d}市", "level": "prefecture",
                            "parent_code": f"{prefix}0000"})
            for c in range(1, per + (1 if p <= extra else 0) + 1):
                regions.append(_county(rng, f"{prefix}{p:02d}{c:02d}", f"{short}{p:02d}{c:02d}县", prefecture))
    return {"dataset": "national-regions (generated for benchmarks)", "baseline": f"{BASELINE_YEAR}-01-01",
            "sources": [{"what": "Sichuan (51)", "where": "services/intake/regions/data/sichuan.json"},
                        {"what": "the other 30 provinces", "where": "bench/regions.py, generated: real province "
                         "prefixes and division counts, placeholder names, random poverty statuses"}],
            "regions": regions}


def _county(rng: random.Random, code: str, name: str, prefecture: str) -> dict:
    poverty = rng.random() < POVERTY_SHARE
    exit_year = rng.randint(2016, 2020) if poverty else None
    exited = exit_year is not None and exit_year < BASELINE_YEAR
    return {"code": code, "name": name, "level": "county", "parent_code": prefecture, "poverty_county": poverty,
            "status": "exited" if exited else "in_poverty", "exit_year": exit_year if exited else None,
            "real_exit_year": None, "status_basis": "generated"}


def counties(data: dict) -> list[dict]:
    return [r for r in data["regions"] if r["level"] == "county"]


def write(path: Path, seed: int = 7) -> dict:
    data = national_regions(seed)
    Path(path).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return data


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "national-regions.json")
    written = write(out)
    levels = [r["level"] for r in written["regions"]]
    print(f"{out}: {levels.count('province')} provinces, {levels.count('prefecture')} prefectures, "
          f"{levels.count('county')} counties")

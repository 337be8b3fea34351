"""The pure ranking rules: competition ranks with ties, and the scopes a score ranks a region in."""

from hypothesis import given
from hypothesis import strategies as st

from services.ranking.ranks import Scope, rank, scopes


def test_ties_share_a_rank_and_the_next_rank_skips():
    ranked = rank([("513432", 90.0, "好"), ("513431", 95.0, "好"), ("513434", 90.0, "好"), ("513433", 80.0, "较好")])
    assert [(r.region_code, r.rank) for r in ranked] == [("513431", 1), ("513432", 2), ("513434", 2), ("513433", 4)]


def test_display_order_within_a_tie_is_by_region_code():
    ranked = rank([("513434", 90.0, "好"), ("513432", 90.0, "好"), ("513433", 90.0, "好")])
    assert [r.region_code for r in ranked] == ["513432", "513433", "513434"] and {r.rank for r in ranked} == {1}


def test_a_county_ranks_in_its_prefecture_and_province_a_prefecture_in_its_province():
    assert scopes("513431", "county", "exited", 2026) == [Scope("513400", "county", "exited", 2026),
                                                          Scope("510000", "county", "exited", 2026)]
    assert scopes("513400", "prefecture", "all", 2026) == [Scope("510000", "prefecture", "all", 2026)]


@given(st.lists(st.tuples(st.sampled_from([f"5134{i:02d}" for i in range(30)]),
                          st.sampled_from([50.0, 70.5, 80.0, 90.0, 100.0])), unique_by=lambda e: e[0]))
def test_rank_is_one_plus_the_number_of_better_scores(entries):
    ranked = rank([(code, total, "") for code, total in entries])
    for r in ranked:
        assert r.rank == 1 + sum(total > r.total for _, total in entries)
    assert [r.region_code for r in ranked] == [c for c, _ in sorted(entries, key=lambda e: (-e[1], e[0]))]

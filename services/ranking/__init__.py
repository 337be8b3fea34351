"""Ranking: not built yet (issue 4: standings by region and league, history, dashboard)."""

"""Scoring: a versioned policy (data) and a pure engine. Worker and API: not built yet (issue 3)."""

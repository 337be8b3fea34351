"""Scoring: not built yet (issue 3: versioned policy, pure engine, effectively-once worker)."""

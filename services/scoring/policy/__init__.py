"""Scoring policies: versioned data, validated."""

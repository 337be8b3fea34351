"""Scoring HTTP routers."""

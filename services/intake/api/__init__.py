"""Intake's HTTP routers: thin, one service call each."""

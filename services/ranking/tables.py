"""Every ranking table, imported so Alembic sees the whole metadata."""

from services.ranking.base import Outbox, metadata
from services.ranking.models import ConsumerOffset, CurrentScore, Region, Standing, StandingHistory, WriteSequence

__all__ = ["ConsumerOffset", "CurrentScore", "Outbox", "Region", "Standing", "StandingHistory", "WriteSequence",
           "metadata"]

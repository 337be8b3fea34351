"""Every scoring table, imported so Alembic sees the whole metadata."""

from services.scoring.base import Outbox, metadata
from services.scoring.models import (
                                     AppliedEvent,
                                     ConsumerOffset,
                                     County,
                                     Explanation,
                                     RebuildRequest,
                                     ScoreRow,
                                     StoredPolicy,
                                     TeamPoints,
                                     WorkerClock,
)

__all__ = ["AppliedEvent", "ConsumerOffset", "County", "Explanation", "Outbox", "RebuildRequest", "ScoreRow",
           "StoredPolicy", "TeamPoints", "WorkerClock", "metadata"]

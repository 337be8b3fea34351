"""Every scoring table, imported so Alembic sees the whole metadata."""

from services.scoring.base import Outbox, metadata
from services.scoring.models import (
                                     AppliedBatch,
                                     ConfiguredPolicy,
                                     ConsumerOffset,
                                     County,
                                     ExplanationBatch,
                                     RebuildRequest,
                                     ScoreRow,
                                     StoredPolicy,
                                     TeamPoints,
                                     WorkerClock,
)

__all__ = ["AppliedBatch", "ConfiguredPolicy", "ConsumerOffset", "County", "ExplanationBatch", "Outbox",
           "RebuildRequest", "ScoreRow", "StoredPolicy", "TeamPoints", "WorkerClock", "metadata"]

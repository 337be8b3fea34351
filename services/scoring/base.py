"""Scoring's own metadata: these tables belong to scoring and to no other service."""

from services.kit.db import service_base
from services.kit.outbox import outbox_model

ScoringModel = service_base("scoring")
metadata = ScoringModel.metadata
Outbox = outbox_model(ScoringModel)

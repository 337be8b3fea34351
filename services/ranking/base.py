"""Ranking's own metadata: these tables belong to ranking and to no other service."""

from services.kit.db import service_base
from services.kit.outbox import outbox_model

RankingModel = service_base("ranking")
metadata = RankingModel.metadata
Outbox = outbox_model(RankingModel)

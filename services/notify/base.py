"""Notify's own metadata: these tables belong to notify and to no other service."""

from services.kit.db import service_base
from services.kit.outbox import outbox_model

NotifyModel = service_base("notify")
metadata = NotifyModel.metadata
Outbox = outbox_model(NotifyModel)  # dead letters only: notify publishes nothing else to Kafka

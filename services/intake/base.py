"""Intake's own metadata: the tables below belong to intake and to no other service."""

from services.kit.db import service_base
from services.kit.outbox import outbox_model

IntakeModel = service_base("intake")
metadata = IntakeModel.metadata
Outbox = outbox_model(IntakeModel)

"""Intake's own metadata: the tables below belong to intake and to no other service."""

from services.kit.db import service_base

IntakeModel = service_base("intake")
metadata = IntakeModel.metadata

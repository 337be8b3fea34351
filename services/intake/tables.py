"""Every intake table, imported so Alembic sees the whole metadata."""

from services.intake.base import Outbox, metadata
from services.intake.findings.models import HouseholdRisk, LedgerEntry, LedgerTransition
from services.intake.regions.models import Region
from services.intake.store.models import ChainHead, NaturalKey, StoredEvent

__all__ = ["ChainHead", "HouseholdRisk", "LedgerEntry", "LedgerTransition", "NaturalKey", "Outbox", "Region",
           "StoredEvent", "metadata"]

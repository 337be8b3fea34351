"""Every intake table, imported so Alembic sees the whole metadata."""

from services.intake.base import metadata
from services.intake.findings.models import HouseholdRisk, LedgerEntry, LedgerTransition
from services.intake.regions.models import Region
from services.intake.store.models import ChainHead, NaturalKey, Published, StoredEvent

__all__ = ["ChainHead", "HouseholdRisk", "LedgerEntry", "LedgerTransition", "NaturalKey", "Published",
           "Region", "StoredEvent", "metadata"]

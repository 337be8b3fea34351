"""Every notify table, imported so Alembic sees the whole metadata."""

from services.notify.base import Outbox, metadata
from services.notify.models import Attempt, ConsumerOffset, Delivery, Endpoint, Message, TrackedFinding

__all__ = ["Attempt", "ConsumerOffset", "Delivery", "Endpoint", "Message", "Outbox", "TrackedFinding", "metadata"]

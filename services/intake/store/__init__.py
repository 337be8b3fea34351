"""The append-only event store: sequence, idempotency, hash chain (and, read by the relay, the outbox)."""

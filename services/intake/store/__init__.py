"""The append-only event store: sequence, idempotency, hash chain, outbox."""

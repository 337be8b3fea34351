"""Event contracts shared by every service: envelope, payloads, topics, schemas. No I/O."""

"""Plumbing every service uses: settings, database, Kafka, outbox relay, errors, health."""

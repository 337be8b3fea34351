"""Intake: accepts field events, keeps them forever (hash-chained), publishes them to Kafka."""

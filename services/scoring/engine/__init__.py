"""The pure scoring engine: no FastAPI, SQL or Kafka."""

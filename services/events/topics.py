"""Kafka topic names: the only names services share about each other."""

INTAKE_EVENTS = "kaohe.intake.events.v1"
SCORING_SCORES = "kaohe.scoring.scores.v1"
RANKING_STANDINGS = "kaohe.ranking.standings.v1"


def dead_letter(topic: str) -> str:
    """The dead-letter topic of `topic` (convention: `<topic>.dlt`)."""
    return f"{topic}.dlt"


def every() -> list[str]:
    """Every topic the services publish to, each with its dead-letter topic."""
    return [name for t in (INTAKE_EVENTS, SCORING_SCORES, RANKING_STANDINGS) for name in (t, dead_letter(t))]

"""`python -m services.intake`: serve intake's API with uvicorn."""

from services.intake.app import create_app
from services.kit import heap
from services.kit.app import serve

if __name__ == "__main__":
    # a batch allocates tens of thousands of short-lived objects: the default pace of the collector
    # walked the process's long-lived objects again and again (docs/performance.md, Intake)
    heap.tune()
    serve(create_app, "intake")

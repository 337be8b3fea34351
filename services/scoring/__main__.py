"""`python -m services.scoring`: serve scoring's API with uvicorn."""

from services.kit.app import serve
from services.scoring.app import create_app

if __name__ == "__main__":
    serve(create_app, "scoring")

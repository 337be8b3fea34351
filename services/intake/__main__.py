"""`python -m services.intake`: serve intake's API with uvicorn."""

from services.intake.app import create_app
from services.kit.app import serve

if __name__ == "__main__":
    serve(create_app, "intake")

"""`python -m services.ranking`: serve ranking's API and the dashboard with uvicorn."""

from services.kit.app import serve
from services.ranking.app import create_app

if __name__ == "__main__":
    serve(create_app, "ranking")

"""`python -m services.notify`: serve notify's API with uvicorn."""

from services.kit.app import serve
from services.notify.app import create_app

if __name__ == "__main__":
    serve(create_app, "notify")

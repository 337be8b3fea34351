"""`python -m services.scoring`: serve scoring's API with uvicorn."""

import uvicorn

from services.kit.logs import configure
from services.kit.settings import Settings
from services.scoring.app import create_app


def main() -> None:
    configure()
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.scoring_port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()

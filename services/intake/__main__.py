"""`python -m services.intake`: serve intake's API with uvicorn."""


import uvicorn

from services.intake.app import create_app
from services.kit.logs import configure
from services.kit.settings import Settings


def main() -> None:
    configure()
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.intake_port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()

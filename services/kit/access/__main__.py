"""`python -m services.kit.access migrate | create-key ...`: the operator's way in.

The first admin key of a new deployment cannot come from the API (that needs a key): make it
here, then make every partner key through `POST /v1/keys`.
"""

import argparse
import sys

from services.kit.access.keys import Access
from services.kit.access.principal import NATIONAL, SCOPES, key_region
from services.kit.db import service_engine
from services.kit.migrate import upgrade
from services.kit.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.kit.access", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="bring the access database to its newest schema")
    create = sub.add_parser("create-key", help="create a key and print its token (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", choices=SCOPES, required=True, help="repeat for several")
    create.add_argument("--region", required=True,
                        help=f"province, prefecture or county code ({NATIONAL}: every province)")
    create.add_argument("--rate-limit-per-min", type=int)
    args = parser.parse_args(argv)

    settings = Settings()
    engine = service_engine(settings, "access")
    try:
        if args.command == "migrate":
            upgrade("access", engine, settings.database("access")[1])
            print("access: migrated", flush=True)
            return 0
        if not key_region(args.region):
            parser.error(f"--region: a 6-digit administrative division code (or {NATIONAL}: every province)")
        _row, token = Access(engine).create(name=args.name, scopes=args.scope, region=args.region,
                                            rate_limit_per_min=args.rate_limit_per_min)
        print(token)
        return 0
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())

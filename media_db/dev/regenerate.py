"""`alembic revision`'s post-write hook: `make records` and `make erd` in one process (each on
its own pays for importing SQLAlchemy and the models again)."""

import sys

from media_db.dev import erd, gen_records


def main() -> int:
    return gen_records.main() or erd.main()


if __name__ == "__main__":
    sys.exit(main())

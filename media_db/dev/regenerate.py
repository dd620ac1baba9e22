"""`alembic revision`'s post-write hook: `make records` and `make erd` in one process (each on
its own pays for importing SQLAlchemy and the models again). When the records cannot follow the
models (the data layer would no longer import), the revision just written goes too: a revision
is never left behind for a change the data layer refuses."""

import sys
from pathlib import Path

from media_db.dev import erd, gen_records


def main(written: Path | None = None) -> int:
    if refused := gen_records.main():
        if written is not None and written.exists():
            written.unlink()
            print(f"No revision written: {written.name} removed.", file=sys.stderr)
        return refused
    return erd.main()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))

"""A backup of the rows a consented drop is about to destroy, and the command that restores it.

media_db/deploy/data_loss.py calls `save` under the drop's ACCESS EXCLUSIVE lock, on the migration's
own connection and transaction: the file holds exactly what the drop removes, and nothing can
be committed in between. COPY (CSV with a header) needs no pg_dump of the server's major and
writes every type in its own text form, which COPY reads back unchanged.

One migration run writes one directory (`<backup dir>/<UTC time>/`): a CSV per table or column
and `manifest.json`, in drop order. `python -m media_db.deploy.backup restore DIR` (`make restore
BACKUP=DIR`) puts everything back in one transaction, parents before children, once the
schema has the tables and columns again (`make upgrade`): tables by COPY, columns by UPDATE on
the primary key. Opt out with `-x backup=skip`; the directory is `-x backup-dir=...` or
MIGRATION_BACKUP_DIR (default .local/backups: put it on durable storage in production).
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from media_db import settings
from media_db.connect import open_connection
from media_db.deploy import project
from media_db.errors import EXIT_UNAVAILABLE, DatabaseUnavailable

log = logging.getLogger(__name__)

# Relative folders (this default too) are read from the project folder, the one with alembic.ini.
DEFAULT_DIRECTORY = ".local/backups"
MANIFEST = "manifest.json"
PRIMARY_KEY = text("""
    SELECT a.attname FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
    WHERE i.indrelid = to_regclass(:t) AND i.indisprimary
    ORDER BY array_position(CAST(i.indkey AS int2[]), a.attnum)
""")
COLUMNS = text("""
    SELECT attname FROM pg_attribute
    WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped ORDER BY attnum
""")


class RestoreRefused(RuntimeError):
    """The backup cannot be restored as things are; nothing was written."""


@dataclass
class Run:
    """The backups of one migration run, in one timestamped directory made on first use, under
    `root` (read from the project folder when relative)."""

    root: str | Path
    directory: Path | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)

    def folder(self) -> Path:
        """Where this run's backups go (an absolute root stays as it is)."""
        return project.folder() / self.root

    def save(self, connection: Connection, quote: Any, table: str, column: str | None) -> None:
        if self.directory is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            self.directory = self.folder() / stamp
            self.directory.mkdir(parents=True)
        key = list(connection.scalars(PRIMARY_KEY, {"t": quote(table)}))
        if column is not None and not key:
            raise RestoreRefused(f"{table} has no primary key: its {column} cannot be restored")
        columns = (
            [*key, column] if column else list(connection.scalars(COLUMNS, {"t": quote(table)}))
        )
        name = f"{table}.{column}.csv" if column else f"{table}.csv"
        where = f" WHERE {quote(column)} IS NOT NULL" if column else ""
        listed = ", ".join(quote(c) for c in columns)
        rows = _copy_out(
            connection,
            f"COPY (SELECT {listed} FROM {quote(table)}{where}) TO STDOUT (FORMAT csv, HEADER)",
            self.directory / name,
        )
        self.entries.append(
            {"table": table, "column": column, "key": key, "columns": columns, "file": name}
        )
        (self.directory / MANIFEST).write_text(
            json.dumps(
                {"database": settings.redacted(connection.engine.url), "entries": self.entries},
                indent=2,
            )
        )
        what = f"{table}.{column}" if column else table
        log.warning(
            "Backed up %s %s of %s to %s. To restore, once the schema has it again "
            "(make upgrade): make restore BACKUP=%s",
            f"{rows:,}",
            "row" if rows == 1 else "rows",
            what,
            self.directory / name,
            self.directory,
        )


def _copy_out(connection: Connection, sql: str, path: Path) -> int:
    raw = connection.connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(sql) as copy, path.open("wb") as out:  # type: ignore[attr-defined]
        for chunk in copy:
            out.write(chunk)
        rows: int = cursor.rowcount
    return rows


def restore(connection: Connection, directory: Path) -> list[str]:
    """Put the backup back, in one transaction; one line per table or column restored."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise RestoreRefused(f"{directory} is not a backup made by a migration: {error}") from None
    quote = connection.dialect.identifier_preparer.quote
    done = []
    with connection.begin():
        for entry in reversed(manifest["entries"]):  # parents before children
            table, column = entry["table"], entry["column"]
            present = set(connection.scalars(COLUMNS, {"t": quote(table)}))
            missing = sorted(set(entry["columns"]) - present)
            if missing:
                shape = f"lacks {', '.join(missing)}" if present else "does not exist"
                raise RestoreRefused(
                    f"{table} {shape}: bring the schema back first (make upgrade)"
                ) from None
            listed = ", ".join(quote(c) for c in entry["columns"])
            source = directory / entry["file"]
            if column is None:
                rows = _copy_in(connection, f"COPY {quote(table)} ({listed}) FROM STDIN", source)
            else:
                rows = _restore_column(connection, quote, entry, source)
            done.append(f"{table}{'.' + column if column else ''}: {rows:,} restored")
    return done


def _copy_in(connection: Connection, sql: str, path: Path) -> int:
    raw = connection.connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cursor, path.open("rb") as source:  # type: ignore[attr-defined]
        with cursor.copy(f"{sql} (FORMAT csv, HEADER)") as copy:
            while chunk := source.read(1 << 16):
                copy.write(chunk)
        rows: int = cursor.rowcount
    return rows


def _restore_column(connection: Connection, quote: Any, entry: dict[str, Any], path: Path) -> int:
    table, column, key = quote(entry["table"]), quote(entry["column"]), entry["key"]
    listed = ", ".join(quote(c) for c in entry["columns"])
    connection.execute(
        text(
            "CREATE TEMPORARY TABLE restored ON COMMIT DROP AS "
            f"SELECT {listed} FROM {table} WITH NO DATA"
        )
    )
    _copy_in(connection, f"COPY restored ({listed}) FROM STDIN", path)
    on = " AND ".join(f"t.{quote(k)} = r.{quote(k)}" for k in key)
    updated = connection.execute(
        text(f"UPDATE {table} AS t SET {column} = r.{column} FROM restored r WHERE {on}")
    ).rowcount
    connection.execute(text("DROP TABLE restored"))
    return int(updated)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "restore":
        print("usage: python -m media_db.backup restore DIRECTORY", file=sys.stderr)
        return 2
    try:
        connection = open_connection("restore")
    except DatabaseUnavailable as error:
        print(error, file=sys.stderr)
        return EXIT_UNAVAILABLE
    with connection:
        try:
            lines = restore(connection, Path(argv[1]))
        except RestoreRefused as error:
            print(f"Nothing restored: {error}", file=sys.stderr)
            return 1
    print("Restored:", *lines, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

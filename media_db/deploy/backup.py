"""A backup of the rows a consented drop is about to destroy, and the command that restores it.

media_db/deploy/data_loss.py calls `save` under the drop's ACCESS EXCLUSIVE lock, on the migration's
own connection and transaction: the file holds exactly what the drop removes, and nothing can
be committed in between. COPY (CSV with a header) needs no pg_dump of the server's major and
writes every type in its own text form, which COPY reads back unchanged.

One migration run writes one directory (`<backup dir>/<UTC time>/`): a CSV per table or column
(written again, not added, when a lock-timeout retry repeats the drop) and `manifest.json`, in
drop order, with each file's rows and sha256; files and manifest are fsynced before the drop
goes on. `python -m media_db.deploy.backup restore DIR` (`make restore BACKUP=DIR`) first checks
every file against the manifest (a damaged one is refused, naming it), then puts everything
back in one transaction, parents before children, once the schema has the tables and columns
again (`make upgrade`): tables by INSERT, columns by UPDATE on the primary key. Rows already
there (a second restore) are left alone and said to be. Opt out with `-x backup=skip`; the
directory is `-x backup-dir=...` or MIGRATION_BACKUP_DIR (default .local/backups: put it on
durable storage in production). Before the first step of a run that would drop data, the
folder is checked: writable, with room for the tables' size on the server.
"""

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
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


DEFAULT_OF = text("""
    SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
    JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
    WHERE d.adrelid = to_regclass(:t) AND a.attname = :c
""")


def lost_values(connection: Connection, quote: Any, table: str, column: str) -> str:
    """SQL over the table's rows: those whose `column` a drop loses, which an upgrade adding it
    again would not give back. Without a default: any value. With one: any row not holding it,
    an explicit NULL among them (the column comes back holding the default everywhere)."""
    default = connection.scalar(DEFAULT_OF, {"t": quote(table), "c": column})
    if default is None:
        return f"{quote(column)} IS NOT NULL"
    return f"{quote(column)} IS DISTINCT FROM ({default})"


class RestoreRefused(RuntimeError):
    """The backup cannot be restored as things are; nothing was written."""


class BackupUnusable(RuntimeError):
    """The backup folder cannot take this run's backups; found before any step."""


@dataclass
class Run:
    """The backups of one migration run, in one timestamped directory made on first use, under
    `root` (read from the project folder when relative). One file per table or column: a retry
    of the drop (after a lock timeout) writes it again, replacing the earlier attempt's, whose
    drop rolled back; the manifest lists each once."""

    root: str | Path
    directory: Path | None = None
    entries: dict[tuple[str, str | None], dict[str, Any]] = field(default_factory=dict)

    def folder(self) -> Path:
        """Where this run's backups go (an absolute root stays as it is)."""
        return project.folder() / self.root

    def check(self, needed_bytes: int) -> None:
        """Before the first step: the folder can be written and has room for `needed_bytes`."""
        folder = self.folder()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".writable-"):
                pass
            free = shutil.disk_usage(folder).free
        except OSError as error:
            raise BackupUnusable(
                f"the backup folder {folder} cannot be written ({error.strerror or error})"
            ) from None
        if free < needed_bytes:
            raise BackupUnusable(
                f"the backup folder {folder} has {_size(free)} free, and the data to back up "
                f"takes about {_size(needed_bytes)} on the server"
            )

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
        where = f" WHERE {lost_values(connection, quote, table, column)}" if column else ""
        listed = ", ".join(quote(c) for c in columns)
        rows, digest = _copy_out(
            connection,
            f"COPY (SELECT {listed} FROM {quote(table)}{where}) TO STDOUT (FORMAT csv, HEADER)",
            self.directory / name,
        )
        self.entries[table, column] = {
            "table": table,
            "column": column,
            "key": key,
            "columns": columns,
            "file": name,
            "rows": rows,
            "sha256": digest,
        }
        _write_durably(
            self.directory / MANIFEST,
            json.dumps(
                {
                    "database": settings.redacted(connection.engine.url),
                    "entries": list(self.entries.values()),
                },
                indent=2,
            ).encode(),
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


def _size(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"


def _copy_out(connection: Connection, sql: str, path: Path) -> tuple[int, str]:
    """COPY to `path`, on disk (fsynced) before the drop goes on; its rows and sha256."""
    raw = connection.connection.dbapi_connection
    assert raw is not None
    digest = hashlib.sha256()
    with raw.cursor() as cursor, cursor.copy(sql) as copy, path.open("wb") as out:  # type: ignore[attr-defined]
        for chunk in copy:
            out.write(chunk)
            digest.update(chunk)
        out.flush()
        os.fsync(out.fileno())
        rows: int = cursor.rowcount
    return rows, digest.hexdigest()


def _write_durably(path: Path, content: bytes) -> None:
    """Replace `path` whole (a crash leaves the old manifest or the new, never half of one)."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


def verified_entries(directory: Path) -> list[dict[str, Any]]:
    """The manifest's entries, once every file is there and matches its checksum: a damaged
    backup is refused before anything is restored, naming the file."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        entries: list[dict[str, Any]] = manifest["entries"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RestoreRefused(f"{directory} is not a backup made by a migration: {error}") from None
    for entry in entries:
        path = directory / entry["file"]
        if "sha256" not in entry:
            raise RestoreRefused(f"{path} has no checksum in the manifest: it cannot be verified")
        try:
            found = _file_digest(path)
        except OSError as error:
            raise RestoreRefused(f"{path} cannot be read ({error.strerror or error})") from None
        if found != entry["sha256"]:
            raise RestoreRefused(
                f"{path} is damaged: its sha256 differs from the manifest's (emptied, changed or "
                f"truncated since the backup of its {entry['rows']:,} rows)"
            )
    return entries


def restore(connection: Connection, directory: Path) -> list[str]:
    """Put the backup back, in one transaction, parents before children; one line per table or
    column. Rows already there (a second restore) are left alone and said to be there."""
    entries = verified_entries(directory)
    quote = connection.dialect.identifier_preparer.quote
    done = []
    with connection.begin():
        for number, entry in enumerate(reversed(entries)):
            table, column = entry["table"], entry["column"]
            present = set(connection.scalars(COLUMNS, {"t": quote(table)}))
            missing = sorted(set(entry["columns"]) - present)
            if missing:
                shape = f"lacks {', '.join(missing)}" if present else "does not exist"
                raise RestoreRefused(
                    f"{table} {shape}: bring the schema back first (make upgrade)"
                ) from None
            loaded = _load(connection, quote, entry, directory / entry["file"], number)
            there = _already_there(connection, quote, entry, loaded)
            what = f"{table}{'.' + column if column else ''}"
            if there == entry["rows"]:
                done.append(f"{what}: {there:,} already there")
                continue
            if column is None and there:
                raise RestoreRefused(
                    f"{there:,} of the {entry['rows']:,} rows of {directory / entry['file']} are "
                    f"already in {table} (by primary key): restore the others by hand"
                )
            rows = _put_back(connection, quote, entry, loaded)
            done.append(f"{what}: {rows:,} restored")
    return done


def _load(
    connection: Connection, quote: Any, entry: dict[str, Any], path: Path, number: int
) -> str:
    """The backup file in a temporary table of the target's column types (dropped at commit)."""
    loaded = f"restored_{number}"
    listed = ", ".join(quote(c) for c in entry["columns"])
    connection.execute(
        text(
            f"CREATE TEMPORARY TABLE {loaded} ON COMMIT DROP AS "
            f"SELECT {listed} FROM {quote(entry['table'])} WITH NO DATA"
        )
    )
    raw = connection.connection.dbapi_connection
    assert raw is not None
    sql = f"COPY {loaded} ({listed}) FROM STDIN (FORMAT csv, HEADER)"
    with raw.cursor() as cursor, cursor.copy(sql) as copy, path.open("rb") as source:  # type: ignore[attr-defined]
        while chunk := source.read(1 << 16):
            copy.write(chunk)
    return loaded


def _matching(quote: Any, names: list[str]) -> str:
    return " AND ".join(f"t.{quote(n)} IS NOT DISTINCT FROM r.{quote(n)}" for n in names)


def _already_there(connection: Connection, quote: Any, entry: dict[str, Any], loaded: str) -> int:
    """Rows of the backup the table has already: by key (a column: with the same value)."""
    column = entry["column"]
    names = [*entry["key"], column] if column else entry["key"] or entry["columns"]
    found = connection.scalar(
        text(
            f"SELECT count(*) FROM {loaded} r WHERE EXISTS "
            f"(SELECT FROM {quote(entry['table'])} t WHERE {_matching(quote, names)})"
        )
    )
    return int(found or 0)


def _put_back(connection: Connection, quote: Any, entry: dict[str, Any], loaded: str) -> int:
    table, listed = quote(entry["table"]), ", ".join(quote(c) for c in entry["columns"])
    if entry["column"] is None:
        statement = (
            f"INSERT INTO {table} ({listed}) OVERRIDING SYSTEM VALUE SELECT {listed} FROM {loaded}"
        )
    else:
        column = quote(entry["column"])
        on = _matching(quote, entry["key"])
        statement = f"UPDATE {table} AS t SET {column} = r.{column} FROM {loaded} r WHERE {on}"
    return int(connection.execute(text(statement)).rowcount)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "restore":
        print("usage: python -m media_db.deploy.backup restore DIRECTORY", file=sys.stderr)
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
    if all(line.endswith(" already there") for line in lines):
        print(f"Nothing restored: every row of {argv[1]} is already there; nothing was changed.")
        return 0
    print("Restored:", *lines, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

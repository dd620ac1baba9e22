"""Media items: create (one or in bulk), read, page newest-first, merge metadata, delete."""

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from media_db import validation as check
from media_db.pool import Database
from media_db.records import MediaPage, MediaRecord, column_list

COLUMNS = column_list(MediaRecord)
MAX_PAGE = 500


@dataclass(frozen=True)
class NewMedia:
    source_url: str
    source_type: str
    local_path: str | None = None
    file_size: int | None = None
    mime_type: str | None = None
    duration_seconds: float | None = None
    width: int | None = None
    height: int | None = None
    metadata: dict[str, Any] | None = None

    def checked(self) -> dict[str, Any]:
        """Column values after every check (raises InvalidInput naming the field). A None
        metadata is left out, so the server default ('{}') applies."""
        check.required_text("source_url", self.source_url)
        check.required_text("source_type", self.source_type, max_length=50)
        if self.mime_type is not None:
            check.required_text("mime_type", self.mime_type, max_length=100)
        check.non_negative("file_size", self.file_size)
        check.non_negative("duration_seconds", self.duration_seconds)
        check.positive("width", self.width)
        check.positive("height", self.height)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.metadata is None:
            del values["metadata"]
        else:
            values["metadata"] = Jsonb(check.json_object("metadata", self.metadata))
        return values


@functools.cache
def _insert(columns: tuple[str, ...]) -> str:
    """INSERT for exactly these columns (the rest take their server defaults); composed once
    per column set, since composing SQL costs more than the round trip on a small machine."""
    return (
        sql.SQL("INSERT INTO media_items ({}) VALUES ({}) RETURNING {}")
        .format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(map(sql.Placeholder, columns)),
            sql.SQL(COLUMNS),
        )
        .as_string()
    )


class MediaRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def create(self, item: NewMedia) -> MediaRecord:
        values = item.checked()
        async with self.db.connection() as connection:
            row = await (await connection.execute(_insert(tuple(values)), values)).fetchone()
        assert row is not None  # INSERT ... RETURNING always returns the row
        return MediaRecord.from_row(row)

    async def create_many(self, items: Sequence[NewMedia]) -> int:
        """Bulk path: every item is checked first, then all rows go in one COPY statement:
        all are written or none. Returns the number written."""
        rows = [item.checked() for item in items]
        names = [f.name for f in fields(NewMedia)]
        copy_sql = sql.SQL("COPY media_items ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, names))
        )
        empty = Jsonb({})  # COPY cannot say DEFAULT: write the server default's value
        async with (
            self.db.connection() as connection,
            connection.cursor() as cursor,
            cursor.copy(copy_sql) as copy,
        ):
            for row in rows:
                await copy.write_row([row.get(name, empty) for name in names])
        return len(rows)

    async def get(self, media_id: uuid.UUID | str) -> MediaRecord | None:
        key = check.as_uuid("media_id", media_id)
        async with self.db.connection() as connection:
            cursor = await connection.execute(
                f"SELECT {COLUMNS} FROM media_items WHERE id = %s", (key,)
            )
            row = await cursor.fetchone()
        return MediaRecord.from_row(row) if row else None

    async def newest(
        self, limit: int = 50, after: tuple[datetime, uuid.UUID] | None = None
    ) -> MediaPage:
        """Newest first, by keyset (created_at, id): stable under concurrent inserts, and served
        by idx_media_items_created_at instead of an OFFSET scan."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise check.InvalidInput("limit", f"must be between 1 and {MAX_PAGE}, got {limit!r}")
        where = "created_at IS NOT NULL"
        params: dict[str, Any] = {"limit": limit + 1}
        if after is not None:
            where += " AND (created_at < %(at)s OR (created_at = %(at)s AND id < %(id)s))"
            params |= {"at": after[0], "id": check.as_uuid("after", after[1])}
        query = (
            f"SELECT {COLUMNS} FROM media_items WHERE {where} "
            "ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
        )
        async with self.db.connection() as connection:
            rows = await (await connection.execute(query, params)).fetchall()
        items = [MediaRecord.from_row(row) for row in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        cursor = (last.created_at, last.id) if last and last.created_at else None
        return MediaPage(items, cursor)

    async def by_source_type(self, source_type: str, limit: int = 100) -> list[MediaRecord]:
        check.required_text("source_type", source_type, max_length=50)
        query = (
            f"SELECT {COLUMNS} FROM media_items WHERE source_type = %s "
            "ORDER BY created_at DESC LIMIT %s"
        )
        async with self.db.connection() as connection:
            rows = await (await connection.execute(query, (source_type, limit))).fetchall()
        return [MediaRecord.from_row(row) for row in rows]

    async def merge_metadata(self, media_id: uuid.UUID | str, patch: dict[str, Any]) -> MediaRecord:
        """Top-level keys of `patch` replace those in `metadata` (JSONB `||`), in one statement,
        so concurrent merges of different keys do not lose each other's writes."""
        key = check.as_uuid("media_id", media_id)
        update = (
            "UPDATE media_items SET metadata = coalesce(metadata, '{}'::jsonb) || %s, "
            f"updated_at = now() WHERE id = %s RETURNING {COLUMNS}"
        )
        values = (Jsonb(check.json_object("metadata", patch)), key)
        async with self.db.connection() as connection:
            row = await (await connection.execute(update, values)).fetchone()
        if row is None:
            raise check.NotFound(f"media item {key} does not exist")
        return MediaRecord.from_row(row)

    async def delete(self, media_id: uuid.UUID | str) -> bool:
        """Deletes the item; its analysis results and jobs go with it (ON DELETE CASCADE)."""
        key = check.as_uuid("media_id", media_id)
        async with self.db.connection() as connection:
            cursor = await connection.execute("DELETE FROM media_items WHERE id = %s", (key,))
        return cursor.rowcount > 0

"""Media items: create (one or in bulk), read, page newest-first, merge metadata, delete."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection as PsycopgConnection
from psycopg.types.json import Jsonb
from sqlalchemy import and_, delete, func, insert, literal, or_, select, update

from media_db import validation as check
from media_db.pool import Database
from media_db.records import MediaPage, MediaRecord
from models import Base, MediaItem

TABLE = Base.metadata.tables[MediaItem.__tablename__]
COLUMNS = [TABLE.c[f.name] for f in fields(MediaRecord)]
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
        """The column values, after every check; raises InvalidInput naming the field."""
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
            del values["metadata"]  # the server default ('{}') applies
        else:
            check.json_object("metadata", self.metadata)
        return values


class MediaRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def create(self, item: NewMedia) -> MediaRecord:
        values = item.checked()
        async with self.db.transaction() as connection:
            row = (await connection.execute(insert(TABLE).values(values).returning(*COLUMNS))).one()
        return MediaRecord.from_row(row)

    async def create_many(self, items: Sequence[NewMedia]) -> int:
        """Bulk path: every item is checked first, then all rows go in one COPY, in one
        transaction: either all are written or none. Returns the number written. A row the
        database refuses raises psycopg's error (COPY runs on the driver connection), naming
        the line."""
        rows = [item.checked() for item in items]
        names = [f.name for f in fields(NewMedia)]
        copy_sql = f"COPY media_items ({', '.join(names)}) FROM STDIN"
        async with self.db.transaction() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert isinstance(raw, PsycopgConnection)
            async with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:
                for row in rows:
                    metadata = row.get("metadata")
                    await copy.write_row(
                        [
                            Jsonb(metadata if metadata is not None else {})
                            if name == "metadata"
                            else row[name]
                            for name in names
                        ]
                    )
        return len(rows)

    async def get(self, media_id: uuid.UUID | str) -> MediaRecord | None:
        key = check.as_uuid("media_id", media_id)
        async with self.db.transaction() as connection:
            row = (await connection.execute(select(*COLUMNS).where(TABLE.c.id == key))).first()
        return MediaRecord.from_row(row) if row else None

    async def newest(
        self, limit: int = 50, after: tuple[datetime, uuid.UUID] | None = None
    ) -> MediaPage:
        """Newest first, by keyset (created_at, id): stable under concurrent inserts, and served
        by idx_media_items_created_at instead of an OFFSET scan."""
        if not 1 <= limit <= MAX_PAGE:
            raise check.InvalidInput("limit", f"must be between 1 and {MAX_PAGE}, got {limit!r}")
        query = select(*COLUMNS).where(TABLE.c.created_at.is_not(None))
        if after is not None:
            created_at, last_id = after[0], check.as_uuid("after", after[1])
            query = query.where(
                or_(
                    TABLE.c.created_at < created_at,
                    and_(TABLE.c.created_at == created_at, TABLE.c.id < last_id),
                )
            )
        query = query.order_by(TABLE.c.created_at.desc(), TABLE.c.id.desc()).limit(limit + 1)
        async with self.db.transaction() as connection:
            rows = (await connection.execute(query)).all()
        items = [MediaRecord.from_row(row) for row in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        cursor = (last.created_at, last.id) if last and last.created_at else None
        return MediaPage(items, cursor)

    async def by_source_type(self, source_type: str, limit: int = 100) -> list[MediaRecord]:
        check.required_text("source_type", source_type, max_length=50)
        query = (
            select(*COLUMNS)
            .where(TABLE.c.source_type == source_type)
            .order_by(TABLE.c.created_at.desc())
            .limit(limit)
        )
        async with self.db.transaction() as connection:
            return [MediaRecord.from_row(row) for row in await connection.execute(query)]

    async def merge_metadata(self, media_id: uuid.UUID | str, patch: dict[str, Any]) -> MediaRecord:
        """Top-level keys of `patch` replace those in `metadata` (JSONB `||`), in one statement."""
        key = check.as_uuid("media_id", media_id)
        check.json_object("metadata", patch)
        current = func.coalesce(TABLE.c.metadata, literal({}, TABLE.c.metadata.type))
        statement = (
            update(TABLE)
            .where(TABLE.c.id == key)
            .values(
                metadata=current.op("||")(literal(patch, TABLE.c.metadata.type)),
                updated_at=func.now(),
            )
            .returning(*COLUMNS)
        )
        async with self.db.transaction() as connection:
            row = (await connection.execute(statement)).first()
        if row is None:
            raise check.NotFound(f"media item {key} does not exist")
        return MediaRecord.from_row(row)

    async def delete(self, media_id: uuid.UUID | str) -> bool:
        """Deletes the item; its analysis results and jobs go with it (ON DELETE CASCADE)."""
        key = check.as_uuid("media_id", media_id)
        async with self.db.transaction() as connection:
            result = await connection.execute(delete(TABLE).where(TABLE.c.id == key))
        return bool(result.rowcount)

"""Analysis results: start, complete, fail, list for a media item, latest per type and provider."""

import uuid
from dataclasses import fields
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select, update
from sqlalchemy.dialects.postgresql import distinct_on

from media_db import validation as check
from media_db.pool import Database
from media_db.records import AnalysisRecord
from models import AnalysisResult, AnalysisStatus, Base

TABLE = Base.metadata.tables[AnalysisResult.__tablename__]
COLUMNS = [TABLE.c[f.name] for f in fields(AnalysisRecord)]
OPEN = (AnalysisStatus.PENDING, AnalysisStatus.PROCESSING)


class AnalysisRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def start(
        self, media_item_id: uuid.UUID | str, analysis_type: str, provider: str
    ) -> AnalysisRecord:
        """Records that an analysis is under way (status `processing`)."""
        values = {
            "media_item_id": check.as_uuid("media_item_id", media_item_id),
            "analysis_type": check.required_text("analysis_type", analysis_type, max_length=50),
            "provider": check.required_text("provider", provider, max_length=50),
            "status": AnalysisStatus.PROCESSING,
        }
        async with self.db.transaction() as connection:
            row = (await connection.execute(insert(TABLE).values(values).returning(*COLUMNS))).one()
        return AnalysisRecord.from_row(row)

    async def complete(
        self,
        result_id: uuid.UUID | str,
        result_data: dict[str, Any],
        token_usage: int | None = None,
        processing_time_ms: int | None = None,
    ) -> AnalysisRecord:
        check.json_object("result_data", result_data)
        check.non_negative("token_usage", token_usage)
        check.non_negative("processing_time_ms", processing_time_ms)
        return await self._finish(
            result_id,
            {
                "status": AnalysisStatus.COMPLETED,
                "result_data": result_data,
                "token_usage": token_usage,
                "processing_time_ms": processing_time_ms,
            },
        )

    async def fail(self, result_id: uuid.UUID | str, error_message: str) -> AnalysisRecord:
        check.required_text("error_message", error_message)
        return await self._finish(
            result_id, {"status": AnalysisStatus.FAILED, "error_message": error_message}
        )

    async def _finish(self, result_id: uuid.UUID | str, values: dict[str, Any]) -> AnalysisRecord:
        key = check.as_uuid("result_id", result_id)
        statement = (
            update(TABLE)
            .where(TABLE.c.id == key, TABLE.c.status.in_(OPEN))
            .values(**values, completed_at=func.now())
            .returning(*COLUMNS)
        )
        async with self.db.transaction() as connection:
            row = (await connection.execute(statement)).first()
            if row is None:
                status = await connection.scalar(select(TABLE.c.status).where(TABLE.c.id == key))
                if status is None:
                    raise check.NotFound(f"analysis result {key} does not exist")
                raise check.InvalidTransition(
                    f"analysis result {key} is {status}; only pending or processing results "
                    "can be completed or failed"
                )
        return AnalysisRecord.from_row(row)

    async def for_media_item(self, media_item_id: uuid.UUID | str) -> list[AnalysisRecord]:
        """All results of one media item, newest first."""
        return await self._select(
            TABLE.c.media_item_id == check.as_uuid("media_item_id", media_item_id),
            order=(TABLE.c.created_at.desc(),),
        )

    async def latest_per_type_and_provider(
        self, media_item_id: uuid.UUID | str
    ) -> list[AnalysisRecord]:
        """The newest result of each (analysis_type, provider) for one media item."""
        key = check.as_uuid("media_item_id", media_item_id)
        query = (
            select(*COLUMNS)
            .where(TABLE.c.media_item_id == key)
            .ext(distinct_on(TABLE.c.analysis_type, TABLE.c.provider))
            .order_by(
                TABLE.c.analysis_type,
                TABLE.c.provider,
                TABLE.c.created_at.desc(),
                TABLE.c.id.desc(),
            )
        )
        async with self.db.transaction() as connection:
            return [AnalysisRecord.from_row(row) for row in await connection.execute(query)]

    async def _select(
        self, condition: ColumnElement[bool], order: tuple[Any, ...]
    ) -> list[AnalysisRecord]:
        query = select(*COLUMNS).where(condition).order_by(*order)
        async with self.db.transaction() as connection:
            return [AnalysisRecord.from_row(row) for row in await connection.execute(query)]

"""Analysis results: start, complete, fail, list for a media item, latest per type and provider."""

import uuid
from typing import Any

from psycopg.types.json import Jsonb

from media_db import validation as check
from media_db.pool import Connection, Database
from media_db.records import AnalysisRecord, column_list
from models import AnalysisStatus

COLUMNS = column_list(AnalysisRecord)
OPEN = [AnalysisStatus.PENDING, AnalysisStatus.PROCESSING]


class AnalysisRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def start(
        self, media_item_id: uuid.UUID | str, analysis_type: str, provider: str
    ) -> AnalysisRecord:
        """Records that an analysis is under way (status `processing`)."""
        values = (
            check.as_uuid("media_item_id", media_item_id),
            check.required_text("analysis_type", analysis_type, max_length=50),
            check.required_text("provider", provider, max_length=50),
            AnalysisStatus.PROCESSING,
        )
        insert = (
            "INSERT INTO analysis_results (media_item_id, analysis_type, provider, status) "
            f"VALUES (%s, %s, %s, %s) RETURNING {COLUMNS}"
        )
        async with self.db.connection() as connection:
            row = await (await connection.execute(insert, values)).fetchone()
        assert row is not None
        return AnalysisRecord.from_row(row)

    async def complete(
        self,
        result_id: uuid.UUID | str,
        result_data: dict[str, Any],
        token_usage: int | None = None,
        processing_time_ms: int | None = None,
    ) -> AnalysisRecord:
        check.non_negative("token_usage", token_usage)
        check.non_negative("processing_time_ms", processing_time_ms)
        payload = Jsonb(check.json_object("result_data", result_data))
        return await self._finish(
            result_id,
            "result_data = %(data)s, token_usage = %(tokens)s, processing_time_ms = %(ms)s",
            {
                "status": AnalysisStatus.COMPLETED,
                "data": payload,
                "tokens": token_usage,
                "ms": processing_time_ms,
            },
        )

    async def fail(self, result_id: uuid.UUID | str, error_message: str) -> AnalysisRecord:
        check.required_text("error_message", error_message)
        return await self._finish(
            result_id,
            "error_message = %(error)s",
            {"status": AnalysisStatus.FAILED, "error": error_message},
        )

    async def _finish(
        self, result_id: uuid.UUID | str, assignments: str, values: dict[str, Any]
    ) -> AnalysisRecord:
        key = check.as_uuid("result_id", result_id)
        update = (
            f"UPDATE analysis_results SET status = %(status)s, {assignments}, "
            "completed_at = now() WHERE id = %(id)s AND status = ANY(%(open)s) "
            f"RETURNING {COLUMNS}"
        )
        async with self.db.connection() as connection:
            cursor = await connection.execute(update, {**values, "id": key, "open": OPEN})
            row = await cursor.fetchone()
            if row is None:
                raise await self._why_not(connection, key)
        return AnalysisRecord.from_row(row)

    @staticmethod
    async def _why_not(connection: Connection, key: uuid.UUID) -> Exception:
        cursor = await connection.execute(
            "SELECT status FROM analysis_results WHERE id = %s", (key,)
        )
        found = await cursor.fetchone()
        if found is None:
            return check.NotFound(f"analysis result {key} does not exist")
        return check.InvalidTransition(
            f"analysis result {key} is {found['status']}; only pending or processing results "
            "can be completed or failed"
        )

    async def for_media_item(self, media_item_id: uuid.UUID | str) -> list[AnalysisRecord]:
        """All results of one media item, newest first."""
        query = (
            f"SELECT {COLUMNS} FROM analysis_results WHERE media_item_id = %s "
            "ORDER BY created_at DESC, id DESC"
        )
        return await self._select(query, check.as_uuid("media_item_id", media_item_id))

    async def latest_per_type_and_provider(
        self, media_item_id: uuid.UUID | str
    ) -> list[AnalysisRecord]:
        """The newest result of each (analysis_type, provider) for one media item."""
        query = (
            f"SELECT DISTINCT ON (analysis_type, provider) {COLUMNS} FROM analysis_results "
            "WHERE media_item_id = %s "
            "ORDER BY analysis_type, provider, created_at DESC, id DESC"
        )
        return await self._select(query, check.as_uuid("media_item_id", media_item_id))

    async def _select(self, query: str, key: uuid.UUID) -> list[AnalysisRecord]:
        async with self.db.connection() as connection:
            rows = await (await connection.execute(query, (key,))).fetchall()
        return [AnalysisRecord.from_row(row) for row in rows]

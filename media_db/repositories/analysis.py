"""Analysis results: start, complete, fail, list for a media item, latest per type and provider."""

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    Interval,
    String,
    any_,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, distinct_on

from media_db import validation
from media_db.errors import InvalidInput, InvalidTransition, NotFound
from media_db.models import AnalysisResult, AnalysisStatus
from media_db.pool import Database
from media_db.records import AnalysisRecord, NewAnalysis
from media_db.repositories.common import (
    Progress,
    delete_in_batches,
    fetch_all,
    fetch_one,
    media_item_must_exist,
)
from media_db.repositories.inputs import Inputs
from media_db.repositories.jobs import PRUNE_BATCH
from media_db.statements import (
    bounds,
    compiled,
    constant,
    record_columns,
    table_of,
)

RESULTS = table_of(AnalysisResult)
COLUMNS = record_columns(RESULTS, AnalysisRecord)
OPEN = [AnalysisStatus.PENDING, AnalysisStatus.PROCESSING]
NEWEST_FIRST = (RESULTS.c.created_at.desc(), RESULTS.c.id.desc())
OF_ITEM = RESULTS.c.media_item_id == bindparam("media_item_id")
TOKEN_USAGE = bounds(RESULTS.c.token_usage)
PROCESSING_TIME_MS = bounds(RESULTS.c.processing_time_ms)

# NewAnalysis is generated from the model (media_db/records.py), and so is every check of it.
NEW_ANALYSIS = Inputs(RESULTS, NewAnalysis, COLUMNS)


def _finish(**assignments: Any) -> str:
    return compiled(
        update(RESULTS)
        .values(status=bindparam("status", type_=String), completed_at=func.now(), **assignments)
        .where(
            RESULTS.c.id == bindparam("id"),
            RESULTS.c.status == any_(bindparam("open", type_=ARRAY(String))),
        )
        .returning(*COLUMNS)
    )


COMPLETE = _finish(
    result_data=bindparam("data"),
    token_usage=bindparam("tokens"),
    processing_time_ms=bindparam("ms"),
)
FAIL = _finish(error_message=bindparam("error"))
STATUS_OF = compiled(select(RESULTS.c.status).where(RESULTS.c.id == bindparam("id")))
_PRUNABLE = (
    select(RESULTS.c.id)
    .where(
        RESULTS.c.status.not_in([constant(status) for status in OPEN]),
        RESULTS.c.created_at < func.now() - bindparam("older_than", type_=Interval),
    )
    .limit(bindparam("batch", type_=Integer))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
PRUNE = compiled(delete(RESULTS).where(RESULTS.c.id == any_(func.array(_PRUNABLE))))
FOR_MEDIA_ITEM = compiled(select(*COLUMNS).where(OF_ITEM).order_by(*NEWEST_FIRST))
LATEST_PER_TYPE_AND_PROVIDER = compiled(
    select(*COLUMNS)
    .ext(distinct_on(RESULTS.c.analysis_type, RESULTS.c.provider))
    .where(OF_ITEM)
    .order_by(RESULTS.c.analysis_type, RESULTS.c.provider, *NEWEST_FIRST)
)


class AnalysisRepository:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def start(
        self,
        analysis: NewAnalysis | uuid.UUID | str,
        analysis_type: str | None = None,
        provider: str | None = None,
    ) -> AnalysisRecord:
        """Records that an analysis of a media item is under way (status `processing`):
        `start(NewAnalysis(...))`, any column a caller may set, or the short form
        `start(media_item_id, analysis_type, provider)`."""
        if not isinstance(analysis, NewAnalysis):
            analysis = NewAnalysis(analysis_type, provider, media_item_id=analysis)  # type: ignore[arg-type]
        values = NEW_ANALYSIS.checked(analysis)
        if values.get("media_item_id") is None:
            raise InvalidInput("media_item_id", "is required: an analysis is of a media item")
        insert = NEW_ANALYSIS.insert(tuple(values), status=constant(AnalysisStatus.PROCESSING))
        with media_item_must_exist():
            row = await fetch_one(self.db, insert, values, AnalysisRecord.from_row)
        assert row is not None
        return row

    async def complete(
        self,
        result_id: uuid.UUID | str,
        result_data: dict[str, Any],
        token_usage: int | None = None,
        processing_time_ms: int | None = None,
    ) -> AnalysisRecord:
        values = {
            "data": validation.jsonb("result_data", result_data),
            "tokens": validation.number("token_usage", token_usage, TOKEN_USAGE),
            "ms": validation.number("processing_time_ms", processing_time_ms, PROCESSING_TIME_MS),
        }
        return await self._finish(result_id, COMPLETE, AnalysisStatus.COMPLETED, values)

    async def fail(self, result_id: uuid.UUID | str, error_message: str) -> AnalysisRecord:
        values = {"error": validation.error_text("error_message", error_message)}
        return await self._finish(result_id, FAIL, AnalysisStatus.FAILED, values)

    async def _finish(
        self, result_id: uuid.UUID | str, update: str, to: AnalysisStatus, values: dict[str, Any]
    ) -> AnalysisRecord:
        key = validation.as_uuid("result_id", result_id)
        params = {**values, "status": to, "id": key, "open": OPEN}
        row = await fetch_one(self.db, update, params, AnalysisRecord.from_row)
        if row is not None:
            return row
        found = await fetch_one(self.db, STATUS_OF, {"id": key}, lambda row: row[0])
        if found is None:
            raise NotFound(f"analysis result {key} does not exist")
        raise InvalidTransition(
            f"analysis result {key} is {found}; only pending or processing results "
            "can be completed or failed"
        )

    async def for_media_item(self, media_item_id: uuid.UUID | str) -> list[AnalysisRecord]:
        """All results of one media item, newest first."""
        key = validation.as_uuid("media_item_id", media_item_id)
        return await fetch_all(
            self.db, FOR_MEDIA_ITEM, {"media_item_id": key}, AnalysisRecord.from_row
        )

    async def latest_per_type_and_provider(
        self, media_item_id: uuid.UUID | str
    ) -> list[AnalysisRecord]:
        """The newest result of each (analysis_type, provider) for one media item."""
        key = validation.as_uuid("media_item_id", media_item_id)
        return await fetch_all(
            self.db, LATEST_PER_TYPE_AND_PROVIDER, {"media_item_id": key}, AnalysisRecord.from_row
        )

    async def prune(
        self, older_than: timedelta, batch: int = PRUNE_BATCH, progress: Progress | None = None
    ) -> int:
        """Deletes finished results (neither pending nor processing) created more than
        `older_than` ago, `batch` at a time, each batch its own short transaction. Returns how
        many went."""
        validation.whole_number("batch", batch, validation.Bounds(whole=True, low=1))
        params = {
            "older_than": validation.positive_duration("older_than", older_than),
            "batch": batch,
        }
        return await delete_in_batches(self.db, PRUNE, params, progress)

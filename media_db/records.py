"""What the repositories return: frozen, fully loaded rows, safe to pass around after
the transaction ended (no session, no lazy loading under asyncio).

Generated from the models by `make records` (media_db/dev/gen_records.py; `make revision` runs it):
do not edit. Field names are the columns' keys (their names, unless a rename kept the name the code
uses as the key), in table order; statuses are the models' enums.
The inputs (NewMedia, NewAnalysis, NewJob) are generated the same way: a rename or a new column
reaches them at once; their optional fields are keyword-only, so a new column shifts no argument.
tests/runtime/test_records_match_models.py fails when this file is stale.
"""

import uuid
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Self

from media_db.models import AnalysisStatus, JobStatus


@dataclass(frozen=True, slots=True)
class MediaRecord:
    """A row of `media_items` (models.MediaItem)."""

    id: uuid.UUID
    source_url: str
    source_type: str
    local_path: str | None
    file_size: int | None
    mime_type: str | None
    duration_seconds: float | None
    width: int | None
    height: int | None
    metadata: dict[str, Any] | None
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Self:
        return cls(*row)


@dataclass(frozen=True, slots=True)
class AnalysisRecord:
    """A row of `analysis_results` (models.AnalysisResult)."""

    id: uuid.UUID
    media_item_id: uuid.UUID | None
    analysis_type: str
    provider: str
    status: AnalysisStatus
    result_data: dict[str, Any] | None
    error_message: str | None
    token_usage: int | None
    processing_time_ms: int | None
    created_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Self:
        return cls(
            row[0],
            row[1],
            row[2],
            row[3],
            AnalysisStatus(row[4]),
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            row[10],
        )


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A row of `processing_jobs` (models.ProcessingJob)."""

    id: uuid.UUID
    media_item_id: uuid.UUID | None
    workflow_type: str
    status: JobStatus
    priority: int
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime | None
    attempts: int
    max_attempts: int
    run_at: datetime
    locked_until: datetime | None
    lease_token: uuid.UUID | None
    error_traceback: str | None
    snoozes: int
    max_snoozes: int
    dedupe_key: str | None
    limit_key: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Self:
        return cls(
            row[0],
            row[1],
            row[2],
            JobStatus(row[3]),
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            row[10],
            row[11],
            row[12],
            row[13],
            row[14],
            row[15],
            row[16],
            row[17],
            row[18],
        )


@dataclass(frozen=True, slots=True)
class LimitRecord:
    """A row of `processing_limits` (models.ProcessingLimit)."""

    key: str
    max_running: int | None
    per_second: Decimal | None
    paused: bool
    updated_at: datetime | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Self:
        return cls(*row)


@dataclass(frozen=True, slots=True)
class NewMedia:
    """What a caller writes to `media_items` (models.MediaItem): every column neither
    the database nor the repository sets. A field left None takes the column's server
    default (or NULL)."""

    source_url: str
    source_type: str
    _: KW_ONLY
    local_path: str | None = None
    file_size: int | None = None
    mime_type: str | None = None
    duration_seconds: float | None = None
    width: int | None = None
    height: int | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NewAnalysis:
    """What a caller writes to `analysis_results` (models.AnalysisResult): every column neither
    the database nor the repository sets. A field left None takes the column's server
    default (or NULL)."""

    analysis_type: str
    provider: str
    _: KW_ONLY
    media_item_id: uuid.UUID | str | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a caller writes to `processing_jobs` (models.ProcessingJob): every column neither
    the database nor the repository sets. A field left None takes the column's server
    default (or NULL)."""

    workflow_type: str
    _: KW_ONLY
    media_item_id: uuid.UUID | str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    run_at: datetime | None = None
    max_snoozes: int | None = None
    dedupe_key: str | None = None
    limit_key: str | None = None

"""What the repositories return: frozen, fully loaded rows, safe to pass around after the
transaction ended (no session, no lazy loading under asyncio). Field names are the column names
(tests/test_records_match_models.py keeps them in step with the models)."""

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self

from models import AnalysisStatus, JobStatus


class _FromRow:
    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        return cls(**row)


@dataclass(frozen=True, slots=True)
class MediaRecord(_FromRow):
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


@dataclass(frozen=True, slots=True)
class AnalysisRecord(_FromRow):
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

    def __post_init__(self) -> None:
        # The column is VARCHAR (raw-SQL writers); here it is the enum.
        object.__setattr__(self, "status", AnalysisStatus(self.status))


@dataclass(frozen=True, slots=True)
class JobRecord(_FromRow):
    id: uuid.UUID
    media_item_id: uuid.UUID | None
    workflow_type: str
    status: JobStatus
    priority: int | None
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", JobStatus(self.status))


@dataclass(frozen=True, slots=True)
class MediaPage:
    items: list[MediaRecord]
    # Pass back as `after=` for the next (older) page; None when this was the last one.
    next_cursor: tuple[datetime, uuid.UUID] | None


def column_list(record: type[Any]) -> str:
    """`id, source_url, ...`: the SELECT/RETURNING list of a record type."""
    return ", ".join(field.name for field in fields(record))

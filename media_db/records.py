"""What the repositories return: frozen, fully loaded rows, safe to pass around after the
transaction ended (no session, no lazy loading under asyncio)."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from sqlalchemy import Row

from models import AnalysisStatus, JobStatus


class _FromRow:
    @classmethod
    def from_row(cls, row: Row[Any]) -> Self:
        return cls(**row._mapping)


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
    status: AnalysisStatus | None
    result_data: dict[str, Any] | None
    error_message: str | None
    token_usage: int | None
    processing_time_ms: int | None
    created_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobRecord(_FromRow):
    id: uuid.UUID
    media_item_id: uuid.UUID | None
    workflow_type: str
    status: JobStatus | None
    priority: int | None
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class MediaPage:
    items: list[MediaRecord]
    # Pass back as `after=` for the next (older) page; None when this was the last one.
    next_cursor: tuple[datetime, uuid.UUID] | None

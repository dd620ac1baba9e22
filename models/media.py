"""The three tables of the seed plan, column for column.

Every default is a *server* default: n8n workflows insert rows with raw SQL and must get the same
ids, timestamps and statuses as the ORM does.
"""

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Numeric, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base
from .enums import AnalysisStatus, JobStatus
from .triggers import attach
from .types import StatusColumn

NEW_UUID = text("gen_random_uuid()")
NOW = text("now()")
# A column only the database writes (its key, its timestamps): the data layer's write side
# (media_db.records.NewMedia, generated) leaves it out. Every other column a caller may set.
SET_BY_SERVER = {"set_by": "server"}
# A column the repository's own methods write (an analysis's outcome, a job's state): no input
# (media_db.records.NewAnalysis, NewJob) sets it.
SET_BY_REPOSITORY = {"set_by": "repository"}
# A job fails for good at its fifth failed attempt: with the worker's default backoff (10 s
# doubling, jittered) that spans about five minutes of a provider's outage or rate limit.
DEFAULT_MAX_ATTEMPTS = 5
# A handler may snooze its job (RetryAfter: a provider's 429) this many times before the next
# snooze counts as a failed attempt: at a minute each, over an hour and a half of throttling.
DEFAULT_MAX_SNOOZES = 100
# What a job says of the last way it failed, each kept short: the last 8 KB (characters) of
# the traceback, its end being where the error was raised.
TRACEBACK_LIMIT = 8192


# The key a job's limits apply to: its limit_key, else its workflow type. The claim and the
# limits' indexes use this very expression (an index is used only for the same expression).
LIMIT_KEY = text("COALESCE(limit_key, workflow_type)")


def one_of(enum: type[StrEnum]) -> str:
    """`status IN ('a', 'b')`: the CHECK that keeps raw-SQL writers to the enum's values."""
    quoted = ", ".join(f"'{member}'" for member in enum)
    return f"status IN ({quoted})"


class MediaItem(Base):
    __tablename__ = "media_items"

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=NEW_UUID, info=SET_BY_SERVER
    )
    source_url: Mapped[str] = mapped_column(Text)
    source_type: Mapped[str] = mapped_column(String(50))
    local_path: Mapped[str | None] = mapped_column(Text)
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    mime_type: Mapped[str | None] = mapped_column(String(100))
    duration_seconds: Mapped[float | None]
    width: Mapped[int | None]
    height: Mapped[int | None]
    # `metadata` is reserved by Declarative (it is the MetaData): same column, other attribute.
    metadata_: Mapped[dict[str, Any] | None] = mapped_column(
        "metadata", server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime | None] = mapped_column(server_default=NOW, info=SET_BY_SERVER)
    # Moved on every UPDATE by a trigger (models/triggers.py), whoever writes.
    updated_at: Mapped[datetime | None] = mapped_column(server_default=NOW, info=SET_BY_SERVER)

    # The database cascades the deletes (ON DELETE CASCADE); passive_deletes keeps the ORM from
    # loading children just to delete them. lazy="raise": under asyncio an implicit load is a bug.
    analysis_results: Mapped[list["AnalysisResult"]] = relationship(
        back_populates="media_item",
        passive_deletes=True,
        cascade="all, delete-orphan",
        lazy="raise",
    )
    processing_jobs: Mapped[list["ProcessingJob"]] = relationship(
        back_populates="media_item",
        passive_deletes=True,
        cascade="all, delete-orphan",
        lazy="raise",
    )

    __table_args__ = (
        Index("idx_media_items_source_type", "source_type"),
        Index("idx_media_items_created_at", created_at.desc()),
        # Names complete to <table>_<name>_check (naming convention), PostgreSQL's own style.
        CheckConstraint("file_size >= 0", name="file_size"),
        CheckConstraint("duration_seconds >= 0", name="duration_seconds"),
        CheckConstraint("width > 0", name="width"),
        CheckConstraint("height > 0", name="height"),
    )


class AnalysisResult(Base):
    __tablename__ = "analysis_results"

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=NEW_UUID, info=SET_BY_SERVER
    )
    media_item_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("media_items.id", ondelete="CASCADE")
    )
    analysis_type: Mapped[str] = mapped_column(String(50))
    provider: Mapped[str] = mapped_column(String(50))
    status: Mapped[AnalysisStatus] = mapped_column(
        StatusColumn(AnalysisStatus, 20),
        server_default=text(f"'{AnalysisStatus.PENDING}'"),
        info=SET_BY_REPOSITORY,
    )
    # The outcome, written by AnalysisRepository.complete / fail.
    result_data: Mapped[dict[str, Any] | None] = mapped_column(info=SET_BY_REPOSITORY)
    error_message: Mapped[str | None] = mapped_column(Text, info=SET_BY_REPOSITORY)
    token_usage: Mapped[int | None] = mapped_column(info=SET_BY_REPOSITORY)
    processing_time_ms: Mapped[int | None] = mapped_column(info=SET_BY_REPOSITORY)
    created_at: Mapped[datetime | None] = mapped_column(server_default=NOW, info=SET_BY_SERVER)
    completed_at: Mapped[datetime | None] = mapped_column(info=SET_BY_REPOSITORY)

    media_item: Mapped[MediaItem | None] = relationship(
        back_populates="analysis_results", lazy="raise"
    )

    __table_args__ = (
        # The plan's name is abbreviated (`media_id`); kept as is so its SQL and ours agree.
        Index("idx_analysis_results_media_id", "media_item_id"),
        Index("idx_analysis_results_type_provider", "analysis_type", "provider"),
        # Pruning finds old results by age through this.
        Index("idx_analysis_results_created_at", "created_at"),
        CheckConstraint(one_of(AnalysisStatus), name="status"),
        CheckConstraint("token_usage >= 0", name="token_usage"),
        CheckConstraint("processing_time_ms >= 0", name="processing_time_ms"),
    )


class ProcessingJob(Base):
    __tablename__ = "processing_jobs"

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=NEW_UUID, info=SET_BY_SERVER
    )
    media_item_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("media_items.id", ondelete="CASCADE")
    )
    workflow_type: Mapped[str] = mapped_column(String(50))
    status: Mapped[JobStatus] = mapped_column(
        StatusColumn(JobStatus, 20),
        server_default=text(f"'{JobStatus.QUEUED}'"),
        info=SET_BY_REPOSITORY,
    )
    # NOT NULL: a NULL priority would sort first in the claim (DESC puts NULLs first).
    priority: Mapped[int] = mapped_column(server_default=text("5"))
    error_message: Mapped[str | None] = mapped_column(Text, info=SET_BY_REPOSITORY)
    started_at: Mapped[datetime | None] = mapped_column(info=SET_BY_REPOSITORY)
    completed_at: Mapped[datetime | None] = mapped_column(info=SET_BY_REPOSITORY)
    created_at: Mapped[datetime | None] = mapped_column(server_default=NOW, info=SET_BY_SERVER)
    # Retries: a handler that raises puts its job back until `attempts` (counted at each
    # claim) reaches `max_attempts`; then it is `failed`, the dead letter, its error kept.
    attempts: Mapped[int] = mapped_column(server_default=text("0"), info=SET_BY_REPOSITORY)
    max_attempts: Mapped[int] = mapped_column(server_default=text(str(DEFAULT_MAX_ATTEMPTS)))
    # A job is never claimed before run_at: schedules, and the backoff between attempts.
    run_at: Mapped[datetime] = mapped_column(server_default=NOW)
    # The lease of a running job: its holder's token, valid until locked_until (NULL: none).
    locked_until: Mapped[datetime | None] = mapped_column(info=SET_BY_REPOSITORY)
    lease_token: Mapped[uuid.UUID | None] = mapped_column(info=SET_BY_REPOSITORY)
    # The traceback of the last failed attempt, its last TRACEBACK_LIMIT characters (NULL: no
    # attempt failed); error_message keeps its one line.
    error_traceback: Mapped[str | None] = mapped_column(Text, info=SET_BY_REPOSITORY)
    # Snoozes (a handler raised RetryAfter): the job went back to the queue, its attempt given
    # back. Past max_snoozes, the next one counts as a failed attempt.
    snoozes: Mapped[int] = mapped_column(server_default=text("0"), info=SET_BY_REPOSITORY)
    max_snoozes: Mapped[int] = mapped_column(server_default=text(str(DEFAULT_MAX_SNOOZES)))
    # At most one live (queued or running) job per key: idx_processing_jobs_dedupe_key. NULL:
    # no deduplication.
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    # The key its limits and pause are looked up by (processing_limits.key). NULL: its
    # workflow_type (the claim reads COALESCE(limit_key, workflow_type), LIMIT_KEY below);
    # an analysis job may name its provider.
    limit_key: Mapped[str | None] = mapped_column(String(50))

    media_item: Mapped[MediaItem | None] = relationship(
        back_populates="processing_jobs", lazy="raise"
    )

    # The queue's claim order (JobQueue.claim adds: due now); created_at: first in, first out
    # among jobs due at the same instant.
    _claim_order = (priority.desc(), run_at, created_at)
    __table_args__ = (
        Index("idx_processing_jobs_status", "status"),
        Index("idx_processing_jobs_priority", priority.desc()),
        # The claim order over queued jobs only.
        Index("idx_processing_jobs_due", *_claim_order, postgresql_where=text("status = 'queued'")),
        # The same within one workflow type, for a worker scoped to its type (as in
        # docs/data-access.md): it reads its own jobs only, not every queued job of other types
        # ahead of them (measured: 190 ms a claim behind 200,000 queued jobs of another type).
        Index(
            "idx_processing_jobs_due_by_type",
            "workflow_type",
            *_claim_order,
            postgresql_where=text("status = 'queued'"),
        ),
        # Running jobs whose lease ran out (their worker died) are found through this.
        Index(
            "idx_processing_jobs_lease",
            "locked_until",
            postgresql_where=text("status = 'running'"),
        ),
        # Pruning finds finished jobs by age through this.
        Index(
            "idx_processing_jobs_finished",
            "completed_at",
            postgresql_where=text("status IN ('completed', 'cancelled', 'failed')"),
        ),
        # Limits per key: the claim takes a limited key's due jobs through this, in claim order
        # (a key behind many other jobs is not found by walking idx_processing_jobs_due).
        Index(
            "idx_processing_jobs_due_by_limit_key",
            LIMIT_KEY,
            *_claim_order,
            postgresql_where=text("status = 'queued'"),
        ),
        # ...and counts its starts in the last second (per_second) through this: a range of
        # the key's latest starts, whatever the number of jobs that ran before.
        Index(
            "idx_processing_jobs_started_by_limit_key",
            LIMIT_KEY,
            "started_at",
            postgresql_where=text("started_at IS NOT NULL"),
        ),
        # Each limit key's due jobs within one workflow type: a scoped claim with a limited key
        # due walks each key of its type through this (one descent to find each key, one for
        # its jobs), so no claim reads the backlog of a key at its limit, or paused.
        Index(
            "idx_processing_jobs_due_by_type_and_limit_key",
            "workflow_type",
            LIMIT_KEY,
            *_claim_order,
            postgresql_where=text("status = 'queued'"),
        ),
        # ON DELETE CASCADE from media_items finds a media item's jobs through this.
        Index("idx_processing_jobs_media_item_id", "media_item_id"),
        # Dedupe: one live job per key. An INSERT ... ON CONFLICT DO NOTHING of a key that is
        # live writes nothing; once the job finished, the key is free again.
        Index(
            "idx_processing_jobs_dedupe_key",
            "dedupe_key",
            unique=True,
            postgresql_where=text("dedupe_key IS NOT NULL AND status IN ('queued', 'running')"),
        ),
        CheckConstraint(one_of(JobStatus), name="status"),
        CheckConstraint("priority >= 0", name="priority"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
        CheckConstraint("snoozes >= 0", name="snoozes"),
        CheckConstraint("max_snoozes >= 0", name="max_snoozes"),
        # Every claim leaves a dead entry in the claim index until VACUUM: start autovacuum at
        # about 1 % dead rows (plus 1,000), not the default 20 %, which on 1M jobs let 200k
        # pile up (measured: bench/queue_health.py).
        {
            "postgresql_with": {
                "autovacuum_vacuum_scale_factor": 0.01,
                "autovacuum_vacuum_threshold": 1000,
                "autovacuum_analyze_scale_factor": 0.02,
            }
        },
    )
    del _claim_order


class ProcessingLimit(Base):
    """Limits and pause per key (a job's COALESCE(limit_key, workflow_type)), read by every
    claim: changed without a deploy (JobQueue.set_limit, clear_limit, pause, resume). A key
    without a row, or whose row sets nothing, is claimed as if unlimited."""

    __tablename__ = "processing_limits"

    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    # At most this many jobs of the key running at once, across every worker (NULL: no limit).
    max_running: Mapped[int | None]
    # At most this many starts per second (NULL: no limit); below 1, one start per 1/x s.
    per_second: Mapped[Decimal | None] = mapped_column(Numeric)
    # A paused key's jobs are not claimed (those running finish).
    paused: Mapped[bool] = mapped_column(server_default=text("false"))
    updated_at: Mapped[datetime | None] = mapped_column(server_default=NOW, info=SET_BY_SERVER)

    __table_args__ = (
        CheckConstraint("max_running >= 1", name="max_running"),
        CheckConstraint("per_second > 0", name="per_second"),
    )


class ProcessingSchedule(Base):
    """The last period each periodic job (media_db.cron.Periodic, declared in code) was
    enqueued for. A worker enqueues a period's job only by moving its row forward, in the same
    statement: one job per period whatever the number of workers, even once that job finished
    or was pruned. Written by the workers only."""

    __tablename__ = "processing_schedules"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The start of the last period enqueued: a fire time of its schedule, in UTC.
    period: Mapped[datetime]
    updated_at: Mapped[datetime | None] = mapped_column(server_default=NOW, info=SET_BY_SERVER)


attach(Base.metadata)

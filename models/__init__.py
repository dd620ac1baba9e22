"""Declarative SQLAlchemy models: the source of truth for the schema."""

from models.base import Base
from models.enums import AnalysisStatus, JobStatus
from models.media import AnalysisResult, MediaItem, ProcessingJob
from models.migration_history import MigrationHistory
from models.triggers import ENTITIES, SCHEMA

__all__ = [
    "ENTITIES",
    "SCHEMA",
    "AnalysisResult",
    "AnalysisStatus",
    "Base",
    "JobStatus",
    "MediaItem",
    "MigrationHistory",
    "ProcessingJob",
]

"""Declarative SQLAlchemy models: the source of truth for the schema.

Imported as `media_db.models` (a link in the checkout, a subpackage in the wheel): the name
`models` at the top of site-packages belongs to the applications that install us.
"""

from .base import Base
from .enums import AnalysisStatus, JobStatus
from .media import AnalysisResult, MediaItem, ProcessingJob, ProcessingLimit, ProcessingSchedule
from .migration_history import MigrationHistory
from .triggers import ENTITIES, SCHEMA

if __name__ != "media_db.models":
    # A second import under another name would build a second MetaData, and two truths.
    raise ImportError(f"import media_db.models, not {__name__}")

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
    "ProcessingLimit",
    "ProcessingSchedule",
]

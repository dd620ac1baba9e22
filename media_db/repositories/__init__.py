"""Async repositories over the three tables, all on one `Database` pool."""

from media_db.repositories.analysis import AnalysisRepository
from media_db.repositories.jobs import JobQueue
from media_db.repositories.media import MediaRepository

__all__ = ["AnalysisRepository", "JobQueue", "MediaRepository"]

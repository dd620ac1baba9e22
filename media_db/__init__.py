"""The media analysis data layer: what the API imports, all from here.

    from media_db import Database, MediaRepository, JobQueue, NewMedia, run_worker, ...

The API's modules are `pool`, `repositories`, `records`, `worker`, `statements`, `validation`,
`settings` and `connect`; the rest of the package (`migrations`, `safety`, `verify`, `adopt`,
`catalog`, `lint_sql`, `erd`, `gen_records`, `check`, `local_server`) serves deploys and
developers and is never imported by the names below.

Names load on first use (PEP 562), so `import media_db.settings` (which `make` runs on every
database target) does not pay for SQLAlchemy and psycopg.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from media_db.connect import DatabaseUnavailable
    from media_db.pool import Database, PoolSize
    from media_db.records import AnalysisRecord, JobRecord, MediaRecord
    from media_db.repositories import AnalysisRepository, JobQueue, MediaRepository
    from media_db.repositories.jobs import NewJob
    from media_db.repositories.media import MediaPage, NewMedia
    from media_db.validation import InvalidInput, InvalidTransition, NotFound
    from media_db.worker import WorkerStats, run_worker
    from models import AnalysisStatus, JobStatus

_WHERE = {
    "AnalysisRecord": "media_db.records",
    "AnalysisRepository": "media_db.repositories",
    "AnalysisStatus": "models",
    "Database": "media_db.pool",
    "DatabaseUnavailable": "media_db.connect",
    "InvalidInput": "media_db.validation",
    "InvalidTransition": "media_db.validation",
    "JobQueue": "media_db.repositories",
    "JobRecord": "media_db.records",
    "JobStatus": "models",
    "MediaPage": "media_db.repositories.media",
    "MediaRecord": "media_db.records",
    "MediaRepository": "media_db.repositories",
    "NewJob": "media_db.repositories.jobs",
    "NewMedia": "media_db.repositories.media",
    "NotFound": "media_db.validation",
    "PoolSize": "media_db.pool",
    "WorkerStats": "media_db.worker",
    "run_worker": "media_db.worker",
}
__all__ = [
    "AnalysisRecord",
    "AnalysisRepository",
    "AnalysisStatus",
    "Database",
    "DatabaseUnavailable",
    "InvalidInput",
    "InvalidTransition",
    "JobQueue",
    "JobRecord",
    "JobStatus",
    "MediaPage",
    "MediaRecord",
    "MediaRepository",
    "NewJob",
    "NewMedia",
    "NotFound",
    "PoolSize",
    "WorkerStats",
    "run_worker",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'media_db' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

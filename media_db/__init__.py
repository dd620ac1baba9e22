"""The media analysis data layer: what the API imports, all from here.

    from media_db import Database, MediaRepository, JobQueue, NewMedia, run_worker, ...

The modules here are what the API runs: `pool`, `repositories`, `records`, `worker` (and
`outages`, how it rides them out), `statements`, `validation`, `errors`, `settings` and
`connect`. Deploys run `media_db.deploy`, `make revision` runs `media_db.autogen`, and only
developers run `media_db.dev` (not in the wheel); none of them is imported by the names below.
Every error raised on purpose is a `MediaDbError`.

Names load on first use (PEP 562), so `import media_db.settings` (which `make` runs on every
database target) does not pay for SQLAlchemy and psycopg.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from media_db.errors import (
        DatabaseNotConfigured,
        DatabaseUnavailable,
        InvalidInput,
        InvalidTransition,
        MediaDbError,
        NotFound,
        PermissionDenied,
    )
    from media_db.models import AnalysisStatus, JobStatus
    from media_db.pool import Database, PoolSize
    from media_db.records import (
        AnalysisRecord,
        JobRecord,
        LimitRecord,
        MediaRecord,
        NewAnalysis,
        NewJob,
        NewMedia,
    )
    from media_db.repositories import AnalysisRepository, JobQueue, MediaRepository
    from media_db.repositories.media import MediaPage
    from media_db.repositories.periodic import Periodic
    from media_db.worker import RetryAfter, WorkerStats, run_worker

_WHERE = {
    "AnalysisRecord": "media_db.records",
    "AnalysisRepository": "media_db.repositories",
    "AnalysisStatus": "media_db.models",
    "Database": "media_db.pool",
    "DatabaseNotConfigured": "media_db.errors",
    "DatabaseUnavailable": "media_db.errors",
    "InvalidInput": "media_db.errors",
    "InvalidTransition": "media_db.errors",
    "MediaDbError": "media_db.errors",
    "JobQueue": "media_db.repositories",
    "JobRecord": "media_db.records",
    "JobStatus": "media_db.models",
    "LimitRecord": "media_db.records",
    "MediaPage": "media_db.repositories.media",
    "MediaRecord": "media_db.records",
    "MediaRepository": "media_db.repositories",
    "NewAnalysis": "media_db.records",
    "NewJob": "media_db.records",
    "NewMedia": "media_db.records",
    "NotFound": "media_db.errors",
    "Periodic": "media_db.repositories.periodic",
    "PermissionDenied": "media_db.errors",
    "PoolSize": "media_db.pool",
    "RetryAfter": "media_db.worker",
    "WorkerStats": "media_db.worker",
    "run_worker": "media_db.worker",
}
__all__ = [
    "AnalysisRecord",
    "AnalysisRepository",
    "AnalysisStatus",
    "Database",
    "DatabaseNotConfigured",
    "DatabaseUnavailable",
    "InvalidInput",
    "InvalidTransition",
    "JobQueue",
    "JobRecord",
    "JobStatus",
    "LimitRecord",
    "MediaDbError",
    "MediaPage",
    "MediaRecord",
    "MediaRepository",
    "NewAnalysis",
    "NewJob",
    "NewMedia",
    "NotFound",
    "Periodic",
    "PermissionDenied",
    "PoolSize",
    "RetryAfter",
    "WorkerStats",
    "run_worker",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'media_db' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

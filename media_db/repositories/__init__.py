"""Async repositories over the three tables, all on one `Database` pool.

One rule for every method, whatever the table:
- a read of one row by its key returns None when there is none (`MediaRepository.get`);
- a change of one row raises NotFound when there is none (`merge_metadata`, `delete`,
  `complete`, `fail`, `cancel`...), and InvalidTransition when the row is not in a state that
  allows it;
- a batch call reports what it did: the rows or ids it changed, or a count (`retry([missing])`
  is `[]`), and never raises for a row that was not there;
- a list read takes `limit` from 1 to MAX_PAGE (500): media pages, jobs by status.
Bad input raises InvalidInput naming the field, before anything is written.
"""

from media_db.repositories.analysis import AnalysisRepository
from media_db.repositories.jobs import JobQueue
from media_db.repositories.media import MediaRepository

__all__ = ["AnalysisRepository", "JobQueue", "MediaRepository"]

"""Pruning deletes finished jobs (completed, cancelled, failed) and finished analysis results
older than the retention, in batches, and nothing else: queued and running jobs, open results
and recent rows stay."""

import asyncio
from datetime import timedelta

from sqlalchemy import URL, create_engine, pool, text

from media_db import AnalysisRepository, Database, JobQueue, PoolSize
from tests.helpers import job_counts

SEED = text("""
    INSERT INTO processing_jobs (workflow_type, status, completed_at)
    SELECT 'w', s.status, CASE WHEN s.status IN ('queued', 'running') THEN NULL
                               ELSE now() - make_interval(days => d) END
    FROM unnest(ARRAY['queued', 'running', 'completed', 'cancelled', 'failed']) AS s(status),
         generate_series(1, 30) AS d
""")


def test_prune_deletes_finished_jobs_older_than_the_retention_only(migrated: URL) -> None:
    with create_engine(migrated, poolclass=pool.NullPool).begin() as connection:
        connection.execute(SEED)

    async def prune() -> int:
        async with await Database.connect(migrated, PoolSize(1, 2)) as db:
            return await JobQueue(db).prune(timedelta(days=7), batch=7)

    deleted = asyncio.run(prune())
    # days 7..30 of each finished status go (day 7 is a few ms past the boundary by now).
    assert deleted == 3 * 24
    assert job_counts(migrated) == {
        "queued": 30,
        "running": 30,
        "completed": 6,
        "cancelled": 6,
        "failed": 6,
    }


def test_prune_deletes_old_finished_analysis_results_only(migrated: URL) -> None:
    with create_engine(migrated, poolclass=pool.NullPool).begin() as connection:
        item = connection.scalar(
            text(
                "INSERT INTO media_items (source_url, source_type) VALUES ('u', 'video') "
                "RETURNING id"
            )
        )
        connection.execute(
            text("""
                INSERT INTO analysis_results
                    (media_item_id, analysis_type, provider, status, created_at)
                SELECT :item, 'caption', 'p', s.status, now() - make_interval(days => d)
                FROM unnest(ARRAY['pending', 'processing', 'completed', 'failed']) AS s(status),
                     generate_series(1, 10) AS d
            """),
            {"item": item},
        )

    async def prune() -> int:
        async with await Database.connect(migrated, PoolSize(1, 2)) as db:
            return await AnalysisRepository(db).prune(timedelta(days=3), batch=4)

    assert asyncio.run(prune()) == 2 * 8  # days 3..10
    with create_engine(migrated, poolclass=pool.NullPool).connect() as connection:
        left: dict[str, int] = dict(
            connection.execute(
                text("SELECT status, count(*) FROM analysis_results GROUP BY status")
            ).all()
        )
    assert left == {"pending": 10, "processing": 10, "completed": 2, "failed": 2}

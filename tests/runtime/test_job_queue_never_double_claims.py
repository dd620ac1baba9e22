"""8 concurrent workers drain 2,000 jobs: each claimed exactly once, none lost, and every worker
sees priorities in order (highest first, then oldest)."""

import asyncio
from collections import Counter

from sqlalchemy import URL, create_engine, pool, text

from media_db.models import JobStatus
from media_db.pool import Database, PoolSize
from media_db.records import JobRecord
from media_db.repositories import JobQueue

JOBS, WORKERS = 2_000, 8
# Distinct created_at per job, priorities 0-9 scattered, so order is fully defined.
SEED = text("""
    INSERT INTO processing_jobs (workflow_type, priority, created_at)
    SELECT 'transcode', (i * 7) % 10, now() - make_interval(secs => i)
    FROM generate_series(1, :jobs) AS i
""")


async def drain(url: URL) -> list[list[JobRecord]]:
    async with await Database.connect(url, PoolSize(min=2, max=WORKERS)) as db:
        queue = JobQueue(db)

        async def worker() -> list[JobRecord]:
            mine = []
            while (job := await queue.claim()) is not None:
                mine.append(job)
                await queue.complete(job.id)
            return mine

        return list(await asyncio.gather(*(worker() for _ in range(WORKERS))))


def test_concurrent_workers_claim_every_job_exactly_once(migrated: URL) -> None:
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.begin() as connection:
        connection.execute(SEED, {"jobs": JOBS})

    per_worker = asyncio.run(drain(migrated))

    claims = Counter(job.id for mine in per_worker for job in mine)
    assert len(claims) == JOBS
    assert set(claims.values()) == {1}
    assert sum(1 for mine in per_worker if mine) > 1, "the workers did not actually overlap"
    for mine in per_worker:
        order = [(-(job.priority or 0), job.created_at) for job in mine]
        assert order == sorted(order), "a worker got a job out of priority order"
    with engine.connect() as connection:
        statuses: dict[str, int] = dict(
            connection.execute(
                text("SELECT status, count(*) FROM processing_jobs GROUP BY status")
            ).all()
        )
    assert statuses == {JobStatus.COMPLETED: JOBS}

"""A statement refused for want of a privilege (SQLSTATE 42501) is a PermissionDenied naming
what was refused and the role, never the driver's error. A worker whose role lacks one says in
one ERROR line which, with the GRANT that fixes it, waits for it rather than dying or looping
silently, and carries on once it is granted."""

import asyncio
import logging
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import URL

from media_db import Database, JobQueue, JobRecord, PermissionDenied, PoolSize, run_worker
from media_db.pool import conninfo

DEADLINE_SECONDS = 60.0  # for a condition, on a loaded machine


def admin(url: URL, statement: sql.SQL | sql.Composed) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as connection:
        connection.execute(statement)


@pytest.fixture
def worker_role(migrated: URL) -> Iterator[tuple[URL, str]]:
    """A role that may claim jobs but not read the limits per key the claim reads."""
    role, password = f"no_limits_{secrets.token_hex(4)}", secrets.token_hex(8)
    name = sql.Identifier(role)
    admin(migrated, sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(name, sql.Literal(password)))
    admin(migrated, sql.SQL("GRANT SELECT, UPDATE ON processing_jobs TO {}").format(name))
    try:
        yield migrated.set(username=role, password=password), role
    finally:
        admin(migrated, sql.SQL("DROP OWNED BY {}").format(name))
        admin(migrated, sql.SQL("DROP ROLE {}").format(name))


def test_a_refused_statement_is_permission_denied_naming_the_table_and_the_role(
    worker_role: tuple[URL, str],
) -> None:
    url, role = worker_role

    async def scenario() -> PermissionDenied:
        async with await Database.connect(url, PoolSize(1, 1)) as db:
            with pytest.raises(PermissionDenied) as refused:
                await JobQueue(db).limits()
            return refused.value

    refused = asyncio.run(scenario())
    assert str(refused) == f"permission denied for table processing_limits (role {role})"
    assert refused.role == role


def test_a_worker_names_the_missing_grant_in_one_line_and_carries_on_once_granted(
    migrated: URL, worker_role: tuple[URL, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="media_db")
    url, role = worker_role
    grant = f"GRANT SELECT ON processing_limits TO {role}"
    ran: list[JobRecord] = []

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    async def scenario() -> int:
        async with (
            await Database.connect(migrated, PoolSize(1, 1)) as owner,
            await Database.connect(url, PoolSize(1, 4)) as db,
        ):
            await JobQueue(owner).enqueue("transcode")

            async def handler(job: JobRecord) -> None:
                ran.append(job)

            worker = asyncio.ensure_future(
                run_worker(db, handler, until_empty=True, poll_interval=0.2)
            )
            deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
            while not errors():
                assert asyncio.get_running_loop().time() < deadline, "no line named the refusal"
                assert not worker.done(), worker.exception()
                await asyncio.sleep(0.05)
            assert not ran
            granted = sql.SQL("GRANT SELECT ON processing_limits TO {}").format(
                sql.Identifier(role)
            )
            await asyncio.to_thread(admin, migrated, granted)
            stats = await asyncio.wait_for(worker, DEADLINE_SECONDS)
            return stats.completed

    assert asyncio.run(scenario()) == 1
    assert [job.workflow_type for job in ran] == ["transcode"]
    [line, *later] = errors()
    assert line == (
        f"worker: permission denied for table processing_limits (role {role}): {grant}; "
        "retrying with backoff up to 30 s until granted"
    )
    assert set(later) <= {line}, "another kind of error line"
    assert any("privilege granted after" in r.getMessage() for r in caplog.records)

"""A failed attempt leaves a trace: its traceback is stored in `error_traceback` (its last
TRACEBACK_LIMIT characters, the end where the error was raised), the worker logs one WARNING
per failed attempt naming the job, the attempt and the error, `make jobs` lists failed jobs with
their last error (ID=: one job with its traceback; `make status` points at it) and `make retry`
puts them back by id or by workflow type, refusing in one line when given neither or a
malformed id."""

import asyncio
import logging
import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import URL

from media_db import Database, JobQueue, JobRecord, PoolSize, run_worker
from media_db.models.media import TRACEBACK_LIMIT
from media_db.worker import ERROR_LIMIT
from tests.helpers import environment, run

FAST = timedelta(milliseconds=20)


async def connected(url: URL) -> Database:
    return await Database.connect(url, PoolSize(1, 4))


def provider_call(job: JobRecord) -> None:
    raise ConnectionError(f"provider closed the connection for {job.workflow_type}")


def test_each_failed_attempt_stores_its_traceback_and_logs_one_warning(
    migrated: URL, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> JobRecord:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            job = await queue.enqueue("transcode", max_attempts=2)

            async def handler(claimed: JobRecord) -> None:
                provider_call(claimed)

            stats = await run_worker(db, handler, until_empty=True, retry_backoff=FAST)
            assert (stats.retried, stats.failed) == (1, 1)
            return await queue.get(job.id)

    with caplog.at_level(logging.WARNING, logger="media_db.worker"):
        dead = asyncio.run(scenario())
    assert dead.status == "failed"
    assert dead.error_message == "ConnectionError: provider closed the connection for transcode"
    assert dead.error_traceback is not None
    assert dead.error_traceback.startswith("Traceback (most recent call last):")
    assert "in provider_call" in dead.error_traceback  # the frame that raised
    assert dead.error_traceback.rstrip().endswith(dead.error_message)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    for attempt, (line, outcome) in enumerate(
        zip(warnings, ["queued again", "failed for good"], strict=True), start=1
    ):
        assert str(dead.id) in line
        assert f"attempt {attempt} of 2" in line
        assert outcome in line
        assert "ConnectionError: provider closed the connection" in line
        assert "\n" not in line


def test_a_long_error_keeps_its_start_in_the_message_and_its_last_8_kb_in_the_traceback(
    migrated: URL, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> JobRecord:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            job = await queue.enqueue("transcode", max_attempts=1)

            async def handler(claimed: JobRecord) -> None:
                raise ValueError("x" * 100_000 + "\x00 the end")

            await run_worker(db, handler, until_empty=True)
            return await queue.get(job.id)

    with caplog.at_level(logging.WARNING, logger="media_db.worker"):
        dead = asyncio.run(scenario())
    assert dead.error_message is not None
    assert dead.error_message.startswith("ValueError: xxx")
    assert ERROR_LIMIT < len(dead.error_message) < ERROR_LIMIT + 100
    assert dead.error_message.endswith("more characters: see the traceback]")
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) < ERROR_LIMIT + 300, "the WARNING carries the whole error"
    assert dead.error_traceback is not None
    assert TRACEBACK_LIMIT < len(dead.error_traceback) < TRACEBACK_LIMIT + 100
    assert dead.error_traceback.startswith("[... cut: the last 8192 of ")
    assert dead.error_traceback.rstrip().endswith("x\ufffd the end")


def test_a_handler_past_its_timeout_leaves_where_it_was_waiting(migrated: URL) -> None:
    async def scenario() -> JobRecord:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            job = await queue.enqueue("transcode", max_attempts=1)

            async def waits_on_the_provider(claimed: JobRecord) -> None:
                await asyncio.Event().wait()

            await run_worker(
                db, waits_on_the_provider, until_empty=True, handler_timeout=timedelta(seconds=0.2)
            )
            return await queue.get(job.id)

    dead = asyncio.run(scenario())
    assert dead.error_message is not None
    assert "handler_timeout" in dead.error_message
    assert dead.error_traceback is not None
    assert "waits_on_the_provider" in dead.error_traceback


async def _fail(url: URL, workflow_type: str, count: int) -> list[uuid.UUID]:
    async with await connected(url) as db:
        queue = JobQueue(db)
        ids = [(await queue.enqueue(workflow_type, max_attempts=1)).id for _ in range(count)]

        async def handler(claimed: JobRecord) -> None:
            provider_call(claimed)

        await run_worker(db, handler, workflow_type=workflow_type, until_empty=True)
        return ids


async def _statuses(url: URL) -> dict[uuid.UUID, str]:
    async with await connected(url) as db:
        queue = JobQueue(db)
        return {
            job.id: job.status
            for status in ("queued", "failed")
            for job in await queue.by_status(status, 500)
        }


def test_make_jobs_lists_failed_jobs_and_shows_one_with_its_traceback(migrated: URL) -> None:
    [transcode] = asyncio.run(_fail(migrated, "transcode", 1))
    [caption] = asyncio.run(_fail(migrated, "caption", 1))
    env = environment(migrated)

    listed = run(["make", "-s", "jobs"], env)
    assert listed.returncode == 0, listed.stderr
    for job_id, workflow in [(transcode, "transcode"), (caption, "caption")]:
        [line] = [line for line in listed.stdout.splitlines() if str(job_id) in line]
        assert workflow in line
        assert "attempt 1/1" in line
        assert f"ConnectionError: provider closed the connection for {workflow}" in line

    scoped = run(["make", "-s", "jobs", "STATUS=failed", "WORKFLOW=caption"], env)
    assert str(caption) in scoped.stdout
    assert str(transcode) not in scoped.stdout

    one = run(["make", "-s", "jobs", f"ID={transcode}"], env)
    assert one.returncode == 0, one.stderr
    assert "Traceback (most recent call last):" in one.stdout
    assert "in provider_call" in one.stdout

    none = run(["make", "-s", "jobs", "STATUS=running"], env)
    assert none.stdout.strip() == "No running jobs."

    status = run(["make", "-s", "status"], env)
    assert "2 failed in the last hour (make jobs lists failed jobs" in status.stdout


def test_make_retry_requeues_failed_jobs_by_id_or_by_workflow_type(migrated: URL) -> None:
    transcodes = asyncio.run(_fail(migrated, "transcode", 3))
    [caption] = asyncio.run(_fail(migrated, "caption", 1))
    env = environment(migrated)

    by_id = run(["make", "-s", "retry", f"ID={transcodes[0]}"], env)
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout.strip() == f"{transcodes[0]}: queued again"
    again = run(["make", "-s", "retry", f"ID={transcodes[0]}"], env)
    assert again.stdout.strip() == f"{transcodes[0]}: left as it is: it is queued, not failed"

    by_type = run(["make", "-s", "retry", "WORKFLOW=transcode"], env)
    assert by_type.returncode == 0, by_type.stderr
    assert by_type.stdout.strip() == "2 failed transcode jobs queued again"

    statuses = asyncio.run(_statuses(migrated))
    assert [statuses[job_id] for job_id in transcodes] == ["queued"] * 3
    assert statuses[caption] == "failed"


@pytest.mark.parametrize(
    ("arguments", "refusal"),
    [
        ([], "make retry needs ID=<job id>"),
        (["ID=12345"], "ID='12345' is not a job id"),
        (["ID=  "], "make retry needs ID=<job id>"),
        ([f"ID={uuid.uuid4()}", "WORKFLOW=transcode"], "not both"),
        (["WORKFLOW=" + "w" * 51], "WORKFLOW= refused: must be at most 50 characters"),
    ],
)
def test_make_retry_refuses_in_one_line_and_changes_nothing(
    migrated: URL, arguments: list[str], refusal: str
) -> None:
    [job_id] = asyncio.run(_fail(migrated, "transcode", 1))
    result = run(["make", "-s", "retry", *arguments], environment(migrated))
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    assert refusal in line
    assert "Traceback" not in result.stderr
    assert asyncio.run(_statuses(migrated))[job_id] == "failed"


def test_make_jobs_refuses_an_unknown_status_naming_the_statuses(migrated: URL) -> None:
    result = run(["make", "-s", "jobs", "STATUS=dead"], environment(migrated))
    assert result.returncode == 2
    assert re.search(
        r"STATUS='dead' is not a job status: use one of queued, .*cancelled", result.stderr
    )


def test_the_traceback_goes_with_the_error_it_explains(migrated: URL) -> None:
    """An error written without a traceback (an operator's `fail`, a lease that ran out on the
    last attempt) leaves none of an earlier attempt's beside it."""

    async def scenario() -> tuple[JobRecord, JobRecord]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            ids = {}
            for workflow in ("by-hand", "expired"):
                ids[workflow] = (await queue.enqueue(workflow, max_attempts=2)).id
                first = await queue.claim(workflow)
                assert first is not None
                [back] = await queue.fail_held([(first, "boom", "Traceback ...")], FAST)
                assert back.error_traceback == "Traceback ..."
            # One is failed by hand while running.
            while (await queue.claim("by-hand")) is None:
                await asyncio.sleep(0.01)  # its backoff (20 ms)
            by_hand = await queue.fail(ids["by-hand"], "given up by hand")
            # The other's last attempt's lease runs out.
            while (await queue.claim("expired", lease=timedelta(milliseconds=1))) is None:
                await asyncio.sleep(0.01)
            while not await queue.rescue_expired():
                await asyncio.sleep(0.01)
            return by_hand, await queue.get(ids["expired"])

    by_hand, expired = asyncio.run(scenario())
    assert (by_hand.error_message, by_hand.error_traceback) == ("given up by hand", None)
    assert expired.status == "failed"
    assert expired.error_message == "lease expired: its worker stopped answering"
    assert expired.error_traceback is None

"""A paused key's jobs are not claimed, by any claim and whatever the worker, until the key is
resumed; other keys' jobs go on; a pause and a limit of the same key are independent. `make
status` lists the paused keys and the keys at their limit, `make limits` every key."""

import asyncio
import json

from sqlalchemy import URL

from media_db import Database, JobQueue, JobRecord, JobStatus, PoolSize, run_worker
from tests.helpers import environment, run


async def connected(url: URL) -> Database:
    return await Database.connect(url, PoolSize(1, 4))


def test_a_paused_key_is_not_claimed_until_resumed_and_others_go_on(migrated: URL) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            paused = await queue.pause("openai")
            assert (paused.key, paused.paused, paused.max_running) == ("openai", True, None)
            for _ in range(3):
                await queue.enqueue("analysis", limit_key="openai", priority=9)
            other = await queue.enqueue("analysis", limit_key="anthropic", priority=1)
            claimed = await queue.claim_many(10)
            assert [job.id for job in claimed] == [other.id]
            assert await queue.claim() is None
            assert await queue.claim_many(10, workflow_type="analysis") == []
            # A limit set meanwhile keeps the pause; resuming keeps the limit.
            await queue.set_limit("openai", max_running=2)
            assert await queue.claim() is None
            await queue.resume("openai")
            [limit] = await queue.limits()
            assert (limit.key, limit.paused, limit.max_running) == ("openai", False, 2)
            assert len(await queue.claim_many(10)) == 2
            # Paused, then the limit cleared: the row stays for the pause; resumed: gone.
            await queue.pause("openai")
            await queue.clear_limit("openai")
            [limit] = await queue.limits()
            assert (limit.paused, limit.max_running) == (True, None)
            await queue.resume("openai")
            assert await queue.limits() == []
            assert len(await queue.claim_many(10)) == 1

    asyncio.run(scenario())


def test_a_worker_runs_nothing_of_a_paused_key(migrated: URL) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.pause("transcode")
            for _ in range(3):
                await queue.enqueue("transcode")
                await queue.enqueue("thumbnail")
            ran: list[str] = []

            async def handler(job: JobRecord) -> None:
                ran.append(job.workflow_type)

            worker = asyncio.ensure_future(run_worker(db, handler, poll_interval=0.05))
            deadline = asyncio.get_running_loop().time() + 30
            while (await queue.counts())[JobStatus.COMPLETED] < 3:
                assert asyncio.get_running_loop().time() < deadline, "thumbnails never ran"
                await asyncio.sleep(0.02)
            before_resume = list(ran)
            await queue.resume("transcode")
            while (await queue.counts())[JobStatus.COMPLETED] < 6:
                assert asyncio.get_running_loop().time() < deadline, "resumed jobs never ran"
                await asyncio.sleep(0.02)
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            return before_resume, ran

    before_resume, ran = asyncio.run(scenario())
    assert before_resume == ["thumbnail"] * 3
    assert sorted(ran) == ["thumbnail"] * 3 + ["transcode"] * 3


def test_status_lists_paused_keys_and_keys_at_their_limit(migrated: URL) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.pause("openai")
            await queue.enqueue("analysis", limit_key="openai")
            await queue.set_limit("transcode", max_running=1)
            await queue.set_limit("thumbnail", max_running=5)
            await queue.enqueue("transcode")
            await queue.enqueue("transcode")
            assert await queue.claim() is not None

    asyncio.run(scenario())
    env = environment(migrated)
    status = run(["make", "status"], env)
    text = status.stdout
    assert "3 keys limited or paused (1 paused, 1 at its limit" in text
    assert "openai: PAUSED; 0 running; 1 due" in text
    assert "transcode: AT ITS LIMIT; 1 of max_running 1 running; 1 due" in text
    assert "thumbnail:" not in text  # neither paused nor at its limit
    as_json = json.loads(run(["make", "status", "JSON=1"], env).stdout)
    assert [key["key"] for key in as_json["paused_keys"]] == ["openai"]
    assert [key["key"] for key in as_json["keys_at_limit"]] == ["transcode"]
    limits = run(["make", "limits"], env)
    assert limits.returncode == 0, limits.stderr
    assert limits.stdout.splitlines() == [
        "openai: PAUSED; 0 running; 1 due",
        "thumbnail: claiming; 0 of max_running 5 running; 0 due",
        "transcode: AT ITS LIMIT; 1 of max_running 1 running; 1 due",
    ]
    rows = json.loads(run(["make", "limits", "JSON=1"], env).stdout)
    assert [(row["key"], row["paused"], row["at_limit"]) for row in rows] == [
        ("openai", True, False),
        ("thumbnail", False, False),
        ("transcode", False, True),
    ]

"""A periodic job (declared in code: a name, a cron schedule in UTC, a workflow type) is
enqueued once per period, whatever the number of workers: several workers ticking at the same
period write one job, a period whose job finished (or was pruned) is not enqueued again, and
after a downtime only the current period is enqueued, not the missed ones. Its schedule reads
crontab(5)'s fields, and a bad one is refused in one line saying what is wrong. The clock is
the scheduler's argument (`now`); the database is real."""

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import URL, create_engine, pool, text

from media_db import Database, InvalidInput, JobQueue, JobRecord, Periodic, PoolSize, run_worker
from media_db.cron import Schedule
from media_db.repositories.periodic import enqueue_period
from tests.helpers import environment, run

WORKERS = 4
START = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
EVERY_FIVE = Periodic("reanalyse", "*/5 * * * *", "reanalysis", priority=2, limit_key="openai")
DEADLINE_SECONDS = 60.0  # for a condition, on a loaded machine


def keys(url: URL) -> list[str]:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        found = connection.execute(text("SELECT dedupe_key FROM processing_jobs ORDER BY 1"))
        return [key for (key,) in found]


async def tick_all(workers: list[Database], periodic: Periodic, now: datetime) -> int:
    """Every worker's scheduler at once, each with its own clock a little apart (its own pool):
    how many jobs they wrote."""
    written = await asyncio.gather(
        *(
            enqueue_period(db, periodic, now + timedelta(seconds=7 * i))
            for i, db in enumerate(workers)
        )
    )
    return sum(job is not None for job in written)


async def pools(url: URL) -> list[Database]:
    return [await Database.connect(url, PoolSize(1, 1)) for _ in range(WORKERS)]


def test_several_workers_enqueue_one_job_per_period_even_once_it_finished(migrated: URL) -> None:
    async def scenario() -> list[int]:
        workers = await pools(migrated)
        queue = JobQueue(workers[0])
        written = []
        try:
            for period in range(4):
                now = START + timedelta(minutes=5 * period, seconds=30)
                written.append(await tick_all(workers, EVERY_FIVE, now))
                # The period's job runs and finishes (the dedupe index no longer holds its
                # key), then is pruned: the workers ticking again in the same period write
                # nothing.
                jobs = await queue.claim_many(10)
                assert len(await queue.complete_held(jobs)) == len(jobs)
                if period == 2:
                    async with workers[0].connection() as connection:
                        ids = [job.id for job in jobs]
                        await connection.execute(
                            "DELETE FROM processing_jobs WHERE id = ANY(%s)", [ids]
                        )
                written.append(await tick_all(workers, EVERY_FIVE, now + timedelta(minutes=4)))
        finally:
            for db in workers:
                await db.close()
        return written

    # The first period registers the periodic job (its first run is its next period).
    assert asyncio.run(scenario()) == [0, 0, 1, 0, 1, 0, 1, 0]
    assert keys(migrated) == [
        "cron:reanalyse:2026-12-07T14:05Z",
        "cron:reanalyse:2026-12-07T14:15Z",
    ]  # 14:10's was pruned


def test_the_job_carries_what_the_periodic_job_declares(migrated: URL) -> None:
    async def scenario() -> JobRecord | None:
        async with await Database.connect(migrated, PoolSize(1, 2)) as db:
            await enqueue_period(db, EVERY_FIVE, START)
            return await enqueue_period(db, EVERY_FIVE, START + timedelta(minutes=5))

    job = asyncio.run(scenario())
    assert job is not None
    assert (job.workflow_type, job.priority, job.limit_key, job.status) == (
        "reanalysis",
        2,
        "openai",
        "queued",
    )
    assert job.dedupe_key == "cron:reanalyse:2026-12-07T14:05Z"


def test_make_schedules_shows_each_periodic_jobs_last_period_and_its_job(migrated: URL) -> None:
    """The operator's view: the period a worker enqueued last, and what became of its job;
    a periodic job seen for the first time has a period and no job."""
    env = environment(migrated)
    empty = run(["make", "schedules"], env)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip().startswith("No periodic job has run yet")
    nightly = Periodic("prune", "0 3 * * *", "prune")

    async def scenario() -> JobRecord | None:
        async with await Database.connect(migrated, PoolSize(1, 2)) as db:
            await enqueue_period(db, EVERY_FIVE, START)
            await enqueue_period(db, nightly, START)  # seen for the first time: no job
            job = await enqueue_period(db, EVERY_FIVE, START + timedelta(minutes=5))
            assert job is not None
            await JobQueue(db).claim("reanalysis")
            return job

    job = asyncio.run(scenario())
    assert job is not None
    listed = run(["make", "schedules"], env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "prune: last period 2026-12-07T03:00Z; no job (pruned since, or the first period seen: "
        "none is enqueued for it)",
        f"reanalyse: last period 2026-12-07T14:05Z; job {job.id} running after 1 attempt(s)",
    ]
    rows = json.loads(run(["make", "schedules", "JSON=1"], env).stdout)
    assert [(row["name"], row["dedupe_key"], row["job_status"]) for row in rows] == [
        ("prune", "cron:prune:2026-12-07T03:00Z", None),
        ("reanalyse", "cron:reanalyse:2026-12-07T14:05Z", "running"),
    ]


def test_after_a_downtime_only_the_current_period_is_enqueued(migrated: URL) -> None:
    hourly = Periodic("digest", "0 * * * *", "digest")

    async def scenario() -> list[int]:
        workers = await pools(migrated)
        try:
            before = [await tick_all(workers, hourly, START + timedelta(hours=h)) for h in (0, 1)]
            # Down for 30 hours: the workers come back in the middle of an hour.
            back = START + timedelta(hours=31, minutes=40)
            return [*before, await tick_all(workers, hourly, back)]
        finally:
            for db in workers:
                await db.close()

    assert asyncio.run(scenario()) == [0, 1, 1]
    assert keys(migrated) == ["cron:digest:2026-12-07T15:00Z", "cron:digest:2026-12-08T21:00Z"]


def test_a_worker_behind_the_others_never_enqueues_an_older_period(migrated: URL) -> None:
    async def scenario() -> list[JobRecord | None]:
        async with await Database.connect(migrated, PoolSize(1, 2)) as db:
            return [
                await enqueue_period(db, EVERY_FIVE, START + timedelta(minutes=minutes))
                for minutes in (0, 10, 5)
            ]

    assert [job is not None for job in asyncio.run(scenario())] == [False, True, False]


def test_workers_given_a_periodic_job_enqueue_its_current_period_once_and_run_it(
    migrated: URL,
) -> None:
    """Two run_worker loops declaring the same periodic job, restarted after a downtime (its
    row holds a period of last year): the current period is enqueued once and run."""
    yearly = Periodic("yearly-report", "0 0 1 1 *", "report")
    current = Schedule.parse(yearly.schedule).latest(datetime.now(UTC))
    with create_engine(migrated, poolclass=pool.NullPool).begin() as connection:
        connection.execute(
            text("INSERT INTO processing_schedules (name, period) VALUES (:name, :period)"),
            {"name": yearly.name, "period": current.replace(year=current.year - 1)},
        )
    ran: list[JobRecord] = []

    async def scenario() -> None:
        async with await Database.connect(migrated, PoolSize(1, 6)) as db:

            async def report(job: JobRecord) -> None:
                ran.append(job)

            workers = [
                asyncio.ensure_future(
                    run_worker(db, report, workflow_type="report", periodic=[yearly])
                )
                for _ in range(2)
            ]
            deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
            while not (ran and await JobQueue(db).by_status("completed")):
                assert asyncio.get_running_loop().time() < deadline, "no periodic job ran"
                await asyncio.sleep(0.05)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    asyncio.run(scenario())
    assert [job.dedupe_key for job in ran] == [f"cron:yearly-report:{current:%Y-%m-%dT%H:%MZ}"]
    assert keys(migrated) == [ran[0].dedupe_key]


@pytest.mark.parametrize(
    ("schedule", "says"),
    [
        ("* * *", "3 fields; a schedule has 5: minute hour day month weekday"),
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 3 0 * *", "day 0 is out of range 1-31"),
        ("0 3 * 13 *", "month 13 is out of range 1-12"),
        ("0 3 * * 8", "weekday 8 is out of range 0-7"),
        ("50-10 * * * *", "minute range 50-10 runs backwards: write it as 50-59,0-10"),
        ("*/0 * * * *", "minute '*/0': the step must be a whole number from 1"),
        ("0 3 * * monday", "weekday 'monday' is not a number from 0 to 7 or a name (sun, mon"),
        ("0 3 1,,2 * *", "day '' is not a number from 1 to 31"),
        ("0 0 30 2 *", "never fires: no month in it has any of its days"),
        ("@daily", "1 fields; a schedule has 5"),
    ],
)
def test_a_bad_schedule_is_refused_in_one_line_saying_what_is_wrong(
    schedule: str, says: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        Periodic("prune", schedule, "prune")
    message = str(refused.value)
    assert message == f"schedule: {schedule!r}: {message.split(': ', 2)[2]}"
    assert says in message
    assert "\n" not in message


def test_a_bad_periodic_job_is_refused_before_any_work(migrated: URL) -> None:
    with pytest.raises(InvalidInput, match="workflow_type: is required"):
        Periodic("prune", "0 3 * * *", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="name: must be at most 100 characters"):
        Periodic("x" * 101, "0 3 * * *", "prune")
    prune = Periodic("prune", "0 3 * * *", "prune")

    async def refused(periodic: list[object]) -> str:
        async with await Database.connect(migrated, PoolSize(1, 1)) as db:
            with pytest.raises(InvalidInput) as error:
                await run_worker(db, lambda job: asyncio.sleep(0), periodic=periodic)  # type: ignore[arg-type]
            return str(error.value)

    assert asyncio.run(refused([prune, prune])) == (
        "periodic: two periodic jobs are named 'prune': rename one"
    )
    assert "must be Periodic jobs" in asyncio.run(refused(["0 3 * * *"]))


def brute_force(schedule: Schedule, at: datetime, step: timedelta) -> datetime:
    """The nearest fire time from `at` in the direction of `step`, minute by minute."""
    moment = at
    while not (
        moment.minute in schedule.minutes
        and moment.hour in schedule.hours
        and moment.month in schedule.months
        and schedule._fires_on(moment)
    ):
        moment += step
    return moment


@pytest.mark.parametrize(
    "expression",
    [
        "*/7 * * * *",
        "5/20 1-3,22 * * *",
        "0 9-17/4 * * mon-fri",
        "30 4 1,15 * 5",  # cron's OR: the 1st, the 15th, and every Friday
        "0 0 */10 feb,MAR *",
        "15 12 * * 0,7",  # Sunday twice
    ],
)
def test_a_schedule_fires_at_the_minutes_crontab_reads(expression: str) -> None:
    schedule = Schedule.parse(expression)
    minute = timedelta(minutes=1)
    for day, minutes in itertools.product((0, 17, 40, 70), (0, 333, 1439)):
        at = datetime(2027, 1, 30, tzinfo=UTC) + timedelta(days=day, minutes=minutes)
        assert schedule.latest(at + timedelta(seconds=59)) == brute_force(schedule, at, -minute)
        assert schedule.following(at) == brute_force(schedule, at + minute, minute)


def test_the_day_and_weekday_fields_combine_as_in_cron() -> None:
    friday_13th = datetime(2026, 11, 13, tzinfo=UTC)
    either = Schedule.parse("0 0 13 * 5")  # both restricted: the 13th or a Friday
    both = Schedule.parse("0 0 */1 * 5")  # day starts with `*`: Fridays only
    assert either.following(friday_13th) == datetime(2026, 11, 20, tzinfo=UTC)  # a Friday
    assert either.following(datetime(2026, 11, 20, tzinfo=UTC)) == datetime(
        2026, 11, 27, tzinfo=UTC
    )
    assert either.following(datetime(2026, 11, 30, tzinfo=UTC)) == datetime(2026, 12, 4, tzinfo=UTC)
    assert either.latest(datetime(2026, 12, 13, 1, tzinfo=UTC)) == datetime(
        2026, 12, 13, tzinfo=UTC
    )  # a Sunday, the 13th
    assert both.latest(datetime(2026, 12, 13, 1, tzinfo=UTC)) == datetime(2026, 12, 11, tzinfo=UTC)

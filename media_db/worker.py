"""A worker loop, so a user writes the handler and nothing else:

    async def transcode(job: JobRecord) -> None: ...
    await run_worker(db, transcode, workflow_type="transcode", concurrency=10)

The worker keeps up to `concurrency` handlers running and claims more as soon as slots free
up (at most `batch_size` per claim): a slow handler never holds back the others. Each claim
leases its jobs for `lease`; while a handler runs the worker renews the lease (every third of
it), so a slow but live handler is never run twice. A handler that returns completes its job;
one that raises, or runs past `handler_timeout`, puts it back `queued`, due after a jittered
exponential backoff from `retry_backoff`, until its attempts reach `max_attempts`: then the
job is `failed` (the dead letter) with the error kept. Each failed attempt stores its traceback
(`error_traceback`, the last 8 KB; `error_message` keeps the first ERROR_LIMIT characters of
the error) and logs one WARNING naming the job, the attempt and the
error. A handler that raises `RetryAfter(seconds)` (a provider's 429) snoozes its job: back to
`queued`, due in that many seconds, the attempt not spent, counted in `snoozes`; past the job's
`max_snoozes` (default 100) the snooze counts as a failed attempt. A round's completions and
its next claim are one statement (JobQueue.complete_and_claim: one round trip, one commit), and
outcomes are written only while the lease holds: a worker that lost a lease (a long outage)
writes nothing for that job and stops its handler.

Idle workers wake at once when any writer (n8n's raw SQL too) inserts a job: the table's
trigger notifies `media_analysis_jobs` and a dedicated connection LISTENs to it. Polling every
`poll_interval` stays the fallback, and also returns to the queue the jobs whose lease expired
(their worker died): they come back within one lease and one poll.

A running job cancelled (JobQueue.cancel) is stopped at once: the cancel notifies the same
channel (`cancel:<job id>`), and the worker holding the job cancels its handler's task; the job
stays `cancelled`, nothing is written over it (WorkerStats.cancelled counts them). Each time
its LISTEN connection comes up (at start, after a reconnection) the worker asks once which of
its jobs were cancelled meanwhile, unheard; and every `poll_interval`: the fallback when it
does not listen (a transaction pooler) or missed the notification.

Periodic jobs (`periodic=[Periodic(...)]`, media_db/repositories/periodic.py) are enqueued by
the loop at their schedule's fire times, one job per period whatever the number of workers.

Database errors are ridden out (media_db/outages.py): a terminated session is retried after a
moment; an outage of minutes is waited out with capped backoff, one log line per 30 s, and the
worker resumes by itself when the server is back (with `max_outage` it gives up after that long,
raising DatabaseUnavailable). Its handlers keep running meanwhile: the outcome of one that
finishes during the outage is written once the database is back, if the lease is still this
worker's (else it counts as `lost`, see above). Cancelled, or giving up, the worker lets the
round in flight finish (up to 5 s: it may have committed claims), stops its handlers and hands
back what it holds in one attempt; if the database is still down, those jobs come back once
their leases run out.
"""

import asyncio
import contextlib
import logging
import math
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg

from media_db import validation
from media_db.errors import DatabaseUnavailable, InvalidInput, MediaDbError, PermissionDenied
from media_db.models.triggers import JOBS_CHANNEL
from media_db.outages import duration, one_line, ride_out
from media_db.pool import Database, conninfo
from media_db.privileges import Needs, missing_grants
from media_db.records import JobRecord
from media_db.repositories.jobs import (
    CANCEL_PREFIX,
    DEFAULT_LEASE,
    JOBS,
    LIMITS,
    MAX_BATCH,
    JobQueue,
)
from media_db.repositories.periodic import SCHEDULES, Periodic, enqueue_period

log = logging.getLogger(__name__)
T = TypeVar("T")
Handler = Callable[[JobRecord], Awaitable[object]]
DEFAULT_RETRY_BACKOFF = timedelta(seconds=10)
RELISTEN_AFTER_SECONDS = 30.0  # a lost LISTEN connection is tried again this often
HAND_BACK_WAIT_SECONDS = 5.0
ERROR_LIMIT = 1000  # characters of a handler's error kept in error_message and its WARNING
# The longest snooze: a longer wait is a schedule (enqueue with run_at), not a rate limit.
MAX_SNOOZE = timedelta(days=30)
# The privileges a worker's role needs (named in its log line when one is missing); with
# periodic jobs, also PERIODIC_NEEDS.
NEEDS: Needs = {JOBS.name: ("SELECT", "UPDATE"), LIMITS.name: ("SELECT",)}
PERIODIC_NEEDS: Needs = {
    JOBS.name: ("SELECT", "INSERT", "UPDATE"),
    SCHEDULES.name: ("SELECT", "INSERT", "UPDATE"),
}


class RetryAfter(Exception):
    """Raised by a handler: run this job again in `seconds` (a number, or a timedelta), its
    attempt not spent, e.g. on a provider's 429 with its Retry-After. The job goes back to
    `queued` with `run_at = now + seconds` and its `snoozes` counted; once `snoozes` reached
    `max_snoozes`, the next snooze counts as a failed attempt. Not a MediaDbError: it is no
    error of the data layer's. Seconds must be finite, 0 or more, and at most 30 days
    (InvalidInput otherwise, raised where RetryAfter is built)."""

    def __init__(self, seconds: float | timedelta) -> None:
        self.delay = _snooze_delay(seconds)
        super().__init__(f"retry after {self.delay.total_seconds():g} s")


def _snooze_delay(seconds: object) -> timedelta:
    wanted = f"a number of seconds from 0 to {MAX_SNOOZE.total_seconds():g} (30 days)"
    if isinstance(seconds, timedelta):
        amount = seconds.total_seconds()
    elif isinstance(seconds, int | float) and not isinstance(seconds, bool):
        try:
            amount = float(seconds)
        except OverflowError:
            amount = math.inf
    else:
        raise InvalidInput("RetryAfter", f"seconds must be {wanted}, got {seconds!r}")
    if not math.isfinite(amount) or not 0 <= amount <= MAX_SNOOZE.total_seconds():
        raise InvalidInput("RetryAfter", f"seconds must be {wanted}, got {seconds!r}")
    return timedelta(seconds=amount)


@dataclass(frozen=True)
class _Failure:
    """A failed attempt: its one-line error and its traceback."""

    error: str
    traceback: str


@dataclass(frozen=True)
class _Snooze:
    """The handler raised RetryAfter."""

    delay: timedelta
    traceback: str


Outcome = _Failure | _Snooze | None  # None: the handler returned


@dataclass
class WorkerStats:
    completed: int = 0
    failed: int = 0  # for good: attempts spent (the dead letters)
    retried: int = 0  # attempts that failed and were queued again
    snoozed: int = 0  # jobs put back by RetryAfter, their attempt not spent
    cancelled: int = 0  # running jobs cancelled (JobQueue.cancel): their handler stopped
    # Leases that ran out while the handler ran, or before its outcome was written (a long
    # outage): the job may run elsewhere, and its outcome here was not written.
    lost: int = 0


async def run_worker(
    db: Database,
    handler: Handler,
    *,
    workflow_type: str | None = None,
    batch_size: int = 10,
    concurrency: int = 10,
    poll_interval: float = 1.0,
    until_empty: bool = False,
    lease: timedelta = DEFAULT_LEASE,
    retry_backoff: timedelta = DEFAULT_RETRY_BACKOFF,
    handler_timeout: timedelta | None = None,
    wakeup: bool = True,
    max_outage: timedelta | None = None,
    periodic: Sequence[Periodic] = (),
) -> WorkerStats:
    """Runs until cancelled, or, with `until_empty`, until no job of its workflow type is queued
    (due or not) or running. Rides out database outages for ever, or, with `max_outage`, raises
    DatabaseUnavailable once the database has been unavailable that long. `periodic`: jobs it
    enqueues once per period of their schedule (media_db/repositories/periodic.py), of any
    workflow type; however many workers declare one, each period gets one job."""
    validation.whole_number("concurrency", concurrency, validation.Bounds(whole=True, low=1))
    validation.whole_number("batch_size", batch_size, validation.between(1, MAX_BATCH))
    validation.positive("poll_interval", poll_interval)
    validation.positive_duration("lease", lease)
    validation.positive_duration("retry_backoff", retry_backoff)
    if handler_timeout is not None:
        validation.positive_duration("handler_timeout", handler_timeout)
    if max_outage is not None:
        validation.positive_duration("max_outage", max_outage)
    JobQueue._workflow(workflow_type)  # refused here, before any work
    worker = _Worker(
        db, handler, workflow_type, batch_size, concurrency, poll_interval, lease,
        retry_backoff, handler_timeout, max_outage.total_seconds() if max_outage else None,
        _periodic(periodic),
    )  # fmt: skip
    return await worker.run(until_empty, wakeup)


@dataclass
class _Worker:
    db: Database
    handler: Handler
    workflow_type: str | None
    batch_size: int
    concurrency: int
    poll_interval: float
    lease: timedelta
    retry_backoff: timedelta
    handler_timeout: timedelta | None
    max_outage: float | None
    periodic: tuple[Periodic, ...]
    stats: WorkerStats = field(default_factory=WorkerStats)
    # The period each periodic job was last looked at for: the next look is at its next one.
    periods: dict[str, datetime] = field(default_factory=dict)
    running: dict["asyncio.Task[Outcome]", JobRecord] = field(default_factory=dict)
    in_flight: "asyncio.Future[Any] | None" = None  # the round being written, see _unstoppable
    stopping: bool = False
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.queue = JobQueue(self.db)

    async def run(self, until_empty: bool, wakeup: bool) -> WorkerStats:
        listener = asyncio.ensure_future(self._listen()) if wakeup else None
        try:
            await self._loop(until_empty)
        except (asyncio.CancelledError, DatabaseUnavailable):  # cancelled, or past max_outage
            await self._hand_back()
            raise
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
        return self.stats

    async def _loop(self, until_empty: bool) -> None:
        loop = asyncio.get_running_loop()
        renew_every = self.lease.total_seconds() / 3
        next_rescue = next_renewal = next_period = loop.time()
        while True:
            if self.periodic and loop.time() >= next_period:
                next_period = loop.time() + await self._db(self._enqueue_periodic)
            if loop.time() >= next_rescue:
                await self._db(self.queue.rescue_expired)
                if self.running:  # the fallback when a cancel's notification was missed
                    self._stop_cancelled(await self._db(self._cancelled_among_held))
                next_rescue = loop.time() + self.poll_interval
            done = [task for task in self.running if task.done()]
            free = self.concurrency - len(self.running) + len(done)
            asked = min(free, self.batch_size)
            claimed = await self._unstoppable(self._settle(done, claim=asked))
            if (
                until_empty
                and not self.running
                and not await self._db(lambda: self.queue.has_work(self.workflow_type))
            ):
                return
            if claimed and len(claimed) == asked and free > asked:
                continue  # more may be due and slots are free: claim again at once
            if self.running and loop.time() >= next_renewal:
                await self._renew()
                next_renewal = loop.time() + renew_every
            waits = [next_renewal if self.running else math.inf]
            if self.periodic:
                waits.append(next_period)
            if free - len(claimed) > 0 or self.running:
                # A free slot polls (a wakeup comes earlier); held jobs are polled for cancels.
                waits.append(next_rescue)
            await self._wait(max(min(waits) - loop.time(), 0), listen=free > len(claimed))

    async def _unstoppable(self, round_: Awaitable[T]) -> T:
        """A round's statement may commit even when the worker is cancelled while it runs:
        it runs to its end (the hand-back waits for it), so that what it completed and claimed
        is known, rather than its claims left running until their leases run out."""
        self.in_flight = asyncio.ensure_future(round_)
        return await asyncio.shield(self.in_flight)

    async def _handle(self, job: JobRecord) -> Outcome:
        """None when the handler returned, else the failure to record."""
        timeout = self.handler_timeout.total_seconds() if self.handler_timeout else None
        try:
            await asyncio.wait_for(self.handler(job), timeout)
        except RetryAfter as snooze:
            return _Snooze(snooze.delay, _traceback(snooze))
        except TimeoutError as error:
            message = f"TimeoutError: the handler ran longer than handler_timeout ({timeout:g} s)"
            return _Failure(message, _traceback(error))
        except Exception as error:
            return _Failure(_error_line(error), _traceback(error))
        return None

    async def _wait(self, seconds: float, listen: bool) -> None:
        """Until a handler finishes, a job is inserted (when a slot is free), or `seconds`."""
        woken = asyncio.ensure_future(self.woken.wait()) if listen else None
        waiting: set[asyncio.Future[Any]] = {*self.running, *([woken] if woken else [])}
        try:
            if waiting:
                await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(seconds)
        finally:
            if woken is not None:
                woken.cancel()

    async def _db(self, operation: Callable[[], Awaitable[T]], once: bool = False) -> T:
        """The operation, riding out the database's outages (up to max_outage); `once`: a
        single attempt."""
        if once:
            return await operation()
        return await ride_out(self.db, operation, self.max_outage, self._explain)

    async def _explain(self, refused: PermissionDenied) -> str:
        """The refusal, and the GRANTs that fix it: one log line."""
        needs = {**NEEDS, **PERIODIC_NEEDS} if self.periodic else NEEDS
        try:
            grants = await missing_grants(self.db, needs, refused.role)
        except MediaDbError:
            grants = []
        fix = "; ".join(grants) or f"grant {refused.role} the privilege refused"
        return f"worker: {refused}: {fix}"

    async def _settle(
        self, done: list["asyncio.Task[Outcome]"], claim: int = 0, once: bool = False
    ) -> list[JobRecord]:
        """Writes the outcomes of finished handlers and claims up to `claim` more jobs, whose
        handlers start at once. The completions and the claim are one statement (the round's
        one round trip and commit); failures, the rare case, their own. Finished jobs leave
        `running` once written: if the worker gives up meanwhile, it hands them back with the
        rest."""
        stopped = [task for task in done if task.cancelled()]  # their job was cancelled
        self.stats.cancelled += len(stopped)
        outcomes = [(self.running[task], task.result()) for task in done if task not in stopped]
        completed = [job for job, outcome in outcomes if outcome is None]
        snoozed = [(job, outcome) for job, outcome in outcomes if isinstance(outcome, _Snooze)]
        # Past max_snoozes, a snooze is a failed attempt.
        snoozes = [(job, snooze.delay) for job, snooze in snoozed if job.snoozes < job.max_snoozes]
        failed = [(job, outcome) for job, outcome in outcomes if isinstance(outcome, _Failure)]
        failed += [
            (job, _Failure(_too_many_snoozes(job), snooze.traceback))
            for job, snooze in snoozed
            if job.snoozes >= job.max_snoozes
        ]
        failures = [(job, failure.error, failure.traceback) for job, failure in failed]
        snoozed_rows = (
            await self._db(lambda: self.queue.snooze_held(snoozes), once) if snoozes else []
        )
        self.stats.snoozed += len(snoozed_rows)
        rows = await self._db(lambda: self.queue.fail_held(failures, self.retry_backoff), once)
        for row in rows:
            if row.status == "failed":
                self.stats.failed += 1
            else:
                self.stats.retried += 1
        _log_failures(failed, {row.id: row for row in rows})
        if claim:
            self.woken.clear()  # a job inserted from now on wakes the next wait
            written, claimed = await self._db(
                lambda: self.queue.complete_and_claim(
                    completed, claim, self.workflow_type, self.lease
                ),
                once,
            )
        else:
            written = {
                job.id for job in await self._db(lambda: self.queue.complete_held(completed), once)
            }
            claimed = []
        self.stats.completed += len(written)
        for task in done:
            del self.running[task]
        for job in claimed:
            task = asyncio.ensure_future(self._handle(job))
            if self.stopping:
                task.cancel()  # before it starts: the hand-back releases its job
            self.running[task] = job
        # Only the lease's holder writes (the token decides): the rest lost theirs meanwhile.
        unwritten = (
            {job.id for job, _ in outcomes}
            - written
            - {row.id for row in rows}
            - {row.id for row in snoozed_rows}
        )
        if unwritten:
            log.warning(
                "worker: %d jobs finished after their lease was lost (another worker may run "
                "them); their outcome was not written: %s",
                len(unwritten),
                ", ".join(sorted(map(str, unwritten))),
            )
            self.stats.lost += len(unwritten)
        return claimed

    async def _enqueue_periodic(self) -> float:
        """Enqueues each periodic job whose period this worker has not looked at yet (another
        worker may have enqueued it: then nothing is written); returns the seconds until the
        next period starts, of any of them."""
        now = datetime.now(UTC)
        for periodic in self.periodic:
            period = periodic.parsed.latest(now)
            if self.periods.get(periodic.name) == period:
                continue
            job = await enqueue_period(self.db, periodic, now)
            self.periods[periodic.name] = period
            if job is not None:
                log.info(
                    "worker: enqueued periodic job %s (%s) for its period %s: job %s",
                    periodic.name,
                    periodic.schedule,
                    f"{period:%Y-%m-%d %H:%M} UTC",
                    job.id,
                )
        following = min(periodic.parsed.following(now) for periodic in self.periodic)
        return max((following - datetime.now(UTC)).total_seconds(), 0.0)

    async def _cancelled_among_held(self) -> set[uuid.UUID]:
        held = [job.id for job in self.running.values()]
        found: set[uuid.UUID] = set()
        for start in range(0, len(held), MAX_BATCH):
            found |= await self.queue.cancelled_among(held[start : start + MAX_BATCH])
        return found

    def _stop_cancelled(self, job_ids: set[uuid.UUID]) -> None:
        """Cancels the handlers of these jobs, if this worker runs them (JobQueue.cancel):
        their tasks end cancelled, and the round settling them writes nothing for them (the
        database would refuse it anyway: only a running job takes an outcome)."""
        for task, job in self.running.items():
            if job.id in job_ids and not task.done():
                log.info("worker: job %s was cancelled; stopping its handler", job.id)
                task.cancel()

    async def _renew(self) -> None:
        """Renews every running job's lease; a handler whose lease was lost is stopped."""
        held = await self._db(lambda: self.queue.extend(list(self.running.values()), self.lease))
        gone = [job.id for job in self.running.values() if job.id not in held][:MAX_BATCH]
        # Cancelled rather than lost: stopped as a cancel's notification would have.
        cancelled = await self._db(lambda: self.queue.cancelled_among(gone)) if gone else set()
        self._stop_cancelled(cancelled)
        for task, job in list(self.running.items()):
            if job.id not in held and job.id not in cancelled:
                log.warning("worker: lost the lease of job %s; stopping its handler", job.id)
                task.cancel()
                del self.running[task]
                self.stats.lost += 1

    async def _hand_back(self) -> None:
        """Stops the handlers, writes the outcomes of those that finished and releases the
        rest, in one attempt: a worker stopping does not wait for the database (the round in
        flight gets HAND_BACK_WAIT_SECONDS to finish)."""
        self.stopping = True
        if self.in_flight is not None:
            await asyncio.wait([self.in_flight], timeout=HAND_BACK_WAIT_SECONDS)
            self.in_flight.cancel()
            await asyncio.gather(self.in_flight, return_exceptions=True)
        for task in self.running:
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)
        finished = [task for task in self.running if not task.cancelled()]
        try:
            await self.db.check_server()  # first, directly: a pool facing a dead server waits
            await self._settle(finished, once=True)
            await self.queue.release_held(list(self.running.values()))
        except (DatabaseUnavailable, PermissionDenied) as error:
            log.warning(
                "worker: could not hand back %d jobs (%s); they return to the queue once their "
                "lease (%s) runs out",
                len(self.running),
                one_line(error),
                duration(self.lease.total_seconds()),
            )
        self.running.clear()

    async def _listen(self) -> None:
        """Sets `woken` on every notification; polling covers any time it is not listening."""
        if self.db.listen_url is None:
            log.warning(
                "worker: not listening for new jobs: LISTEN needs a session, and DATABASE_URL "
                "is a transaction pooler (POSTGRES_POOLER=transaction); polling every %g s. "
                "Set DIRECT_DATABASE_URL to wake at once.",
                self.poll_interval,
            )
            return
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    conninfo(self.db.listen_url),
                    autocommit=True,
                    application_name=f"{self.db.options['application_name']}-listen",
                    connect_timeout=self.db.options["connect_timeout"],
                ) as connection:
                    await connection.execute(f"LISTEN {JOBS_CHANNEL}")
                    self.woken.set()  # anything inserted before LISTEN: look once
                    await self._cancels_not_heard()
                    async for notification in connection.notifies():
                        if notification.payload.startswith(CANCEL_PREFIX):
                            self._stop_cancelled(_job_id(notification.payload))
                        else:
                            self.woken.set()
            except psycopg.Error as error:
                if not await self._server_answers():
                    await asyncio.sleep(RELISTEN_AFTER_SECONDS)
                    continue  # an outage: the loop reports it, once
                log.warning(
                    "worker: not listening for new jobs (%s); polling every %g s, trying again "
                    "in %g s",
                    one_line(error),
                    self.poll_interval,
                    RELISTEN_AFTER_SECONDS,
                )
                await asyncio.sleep(RELISTEN_AFTER_SECONDS)

    async def _cancels_not_heard(self) -> None:
        """A cancel committed before LISTEN was up sent its notification to no one: once
        listening, look once at the jobs held, the round in flight's claims included (they may
        predate such a cancel), rather than wait for the next poll."""
        if self.in_flight is not None:
            await asyncio.wait([self.in_flight])
        if not self.running:
            return
        with contextlib.suppress(DatabaseUnavailable, PermissionDenied):  # the poll looks again
            self._stop_cancelled(await self._cancelled_among_held())

    async def _server_answers(self) -> bool:
        try:
            await self.db.check_server()
        except DatabaseUnavailable:
            return False
        return True


def _periodic(periodic: Sequence[Periodic]) -> tuple[Periodic, ...]:
    """Refused before any work: anything but Periodic jobs, or two of one name."""
    declared = tuple(periodic)
    for item in declared:
        if not isinstance(item, Periodic):
            raise InvalidInput("periodic", f"must be Periodic jobs, got {item!r}")
    names = [item.name for item in declared]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise InvalidInput("periodic", f"two periodic jobs are named {twice[0]!r}: rename one")
    return declared


def _job_id(payload: str) -> set[uuid.UUID]:
    """The job a cancel's notification names (none if it names no job)."""
    try:
        return {uuid.UUID(payload.removeprefix(CANCEL_PREFIX))}
    except ValueError:
        return set()


def _too_many_snoozes(job: JobRecord) -> str:
    return (
        f"RetryAfter: snoozed {job.snoozes} times, its max_snoozes ({job.max_snoozes}); this "
        "snooze counts as a failed attempt (raise max_snoozes for a longer throttle)"
    )


def _error_line(error: Exception) -> str:
    """The error as stored and logged: its first ERROR_LIMIT characters. A provider's exception
    may carry a whole response body (a 1 MB HTML 429 page); the traceback keeps the end."""
    line = f"{type(error).__name__}: {error}"
    if len(line) <= ERROR_LIMIT:
        return line
    return (
        f"{line[:ERROR_LIMIT]} [... {len(line) - ERROR_LIMIT} more characters: see the traceback]"
    )


def _traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def _log_failures(failed: list[tuple[JobRecord, _Failure]], written: dict[Any, JobRecord]) -> None:
    """One WARNING per failed attempt: the job, the attempt, what became of it, the error."""
    for job, failure in failed:
        row = written.get(job.id)
        if row is None:
            outcome = "not written (its lease was lost)"
        elif row.status == "failed":
            outcome = f"failed for good (make jobs ID={job.id} shows its traceback)"
        else:
            outcome = "queued again"
        log.warning(
            "worker: job %s (%s) attempt %d of %d failed, %s: %s",
            job.id,
            job.workflow_type,
            job.attempts,
            job.max_attempts,
            outcome,
            " ".join(failure.error.split()),
        )

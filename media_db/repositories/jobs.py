"""The processing job queue.

`claim` is one statement: the inner SELECT picks the best due job and locks it with
FOR UPDATE SKIP LOCKED, so concurrent workers each get a different job without waiting on each
other; the UPDATE moves it to `running`, counts the attempt and gives it a lease. `claim_many`
is the same statement for up to n jobs (`id = ANY(ARRAY(SELECT ... LIMIT n FOR UPDATE SKIP
LOCKED))`), its batch returned in claim order. A job is never claimed twice while its lease
holds, and none is lost.

Which jobs and in which order come from the model's claim index, `idx_processing_jobs_due`
(its WHERE and its columns), plus "due now" (`run_at <= now()`, which no index predicate can
hold): highest priority first, then the earliest due. A claim scoped to a workflow type runs
through `idx_processing_jobs_due_by_type`, the same order after the type.

Leases: a claim sets `lease_token` and `locked_until = now() + lease`. Only the token's holder
can extend the lease, complete the job or put it back (`extend`, `complete_held`, `fail_held`,
`release`, and `complete_and_claim`, a worker's round in one statement): a worker whose
lease expired and whose job another worker claimed writes nothing.
`rescue_expired` returns jobs whose lease ran out (their worker died) to the queue, or fails
them once their attempts are spent. A failed attempt waits `run_at = now() + backoff` before
the next; the last one leaves the job `failed` (the dead letter) with its error.
"""

import contextlib
import functools
import random
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import (
    ColumnElement,
    DefaultClause,
    Integer,
    Interval,
    Select,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.selectable import CTE, Subquery
from sqlalchemy.sql.util import ClauseAdapter

from media_db import validation
from media_db.errors import InvalidInput, InvalidTransition, NotFound
from media_db.models import JobStatus, ProcessingJob, ProcessingLimit
from media_db.models.media import TRACEBACK_LIMIT
from media_db.models.triggers import JOBS_CHANNEL
from media_db.pool import Database
from media_db.records import JobRecord, LimitRecord, NewJob
from media_db.repositories.common import (
    MAX_PAGE,
    Progress,
    delete_in_batches,
    fetch_all,
    fetch_one,
    media_item_must_exist,
)
from media_db.repositories.inputs import Inputs
from media_db.statements import (
    bounds,
    compiled,
    constant,
    copy_from_stdin,
    index,
    max_length,
    record_columns,
    table_of,
)

JOBS = table_of(ProcessingJob)
COLUMNS = record_columns(JOBS, JobRecord)
CLAIM_INDEX = index(JOBS, "idx_processing_jobs_due")
# Claims scoped to a workflow type: the planner takes this one (same order, after the type).
SCOPED_CLAIM_INDEX = index(JOBS, "idx_processing_jobs_due_by_type")
QUEUED: ColumnElement[bool] = CLAIM_INDEX.dialect_options["postgresql"]["where"]
CLAIMABLE = and_(QUEUED, JOBS.c.run_at <= func.now())
CLAIM_ORDER = list(CLAIM_INDEX.expressions)
# The columns the claim order reads (its expressions are `priority DESC`, ...).
CLAIM_COLUMNS = tuple(JOBS.c[name] for name in ("priority", "run_at", "created_at"))
LIMITS = table_of(ProcessingLimit)
# A job's key for limits and pauses: the expression the model's limit-key indexes are built on.
LIMIT_KEY: ColumnElement[str] = func.coalesce(JOBS.c.limit_key, JOBS.c.workflow_type)
# A row that limits or pauses its key; a row that sets nothing is no limit.
LIMITED = or_(LIMITS.c.paused, LIMITS.c.max_running.is_not(None), LIMITS.c.per_second.is_not(None))
WORKFLOW_TYPE_LENGTH = max_length(JOBS.c.workflow_type)
DEDUPE_KEY_LENGTH = max_length(JOBS.c.dedupe_key)
# One live job per dedupe key: the partial unique index, its predicate read from the model.
DEDUPE_INDEX = index(JOBS, "idx_processing_jobs_dedupe_key")
LIVE_KEY: ColumnElement[bool] = DEDUPE_INDEX.dialect_options["postgresql"]["where"]
PRIORITY = bounds(JOBS.c.priority)
MAX_ATTEMPTS = bounds(JOBS.c.max_attempts)
MAX_SNOOZES = bounds(JOBS.c.max_snoozes)
MAX_BATCH = 1000
PRUNE_BATCH = 10_000  # rows per DELETE: each batch holds its row locks only while it runs
FINISHED = (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.FAILED)
DEFAULT_LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(hours=1)
BATCH = validation.between(1, MAX_BATCH)
PAGE = validation.between(1, MAX_PAGE)


def _server_default(column: Any) -> Any:
    default = column.server_default
    assert isinstance(default, DefaultClause)
    return default.arg


DEFAULT_PRIORITY = int(str(_server_default(JOBS.c.priority).text))
DEFAULT_MAX_ATTEMPTS = int(str(_server_default(JOBS.c.max_attempts).text))
DEFAULT_MAX_SNOOZES = int(str(_server_default(JOBS.c.max_snoozes).text))
LEASE = bindparam("lease", type_=Interval)
RUNNING = JOBS.c.status == constant(JobStatus.RUNNING)


def _once_found(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """A status test on rows found by id, in a form no index answers (`IS TRUE`). Statistics
    rarely see many jobs running, so the planner would take idx_processing_jobs_status and walk
    every running job for each id: 17 ms a completion with 14,000 running, against 0.1 ms by
    primary key (tests/runtime/test_held_jobs_are_found_by_id.py)."""
    return condition.is_(true())


STILL_RUNNING = _once_found(RUNNING)
NO_LEASE = {"locked_until": null(), "lease_token": null()}


def _limits(scope: list[ColumnElement[bool]]) -> CTE:
    """The limited (or paused) keys that have due jobs in the claim's scope, and how many of
    each this claim may start: one processing_limits_room() call per such key (it takes the
    key's advisory lock and counts; see models/triggers.py), so a claim never holds the lock
    of a key it could not take a job of. No row: nothing to call, the claim is the unlimited
    one."""
    room = func.processing_limits_room(
        LIMITS.c.key, LIMITS.c.max_running, LIMITS.c.per_second, LIMITS.c.paused
    )
    has_due = exists().where(*scope, LIMITS.c.key == LIMIT_KEY)
    return select(LIMITS.c.key, room.label("room")).where(LIMITED, has_due).cte("limits")


def _keys(by_workflow: bool) -> CTE:
    """The limit keys with queued jobs in the claim's scope, by a loose index scan: one descent
    of idx_processing_jobs_due_by_limit_key per key (of idx_processing_jobs_due_by_type_and_-
    limit_key for a scoped claim), so no key's backlog is walked to find the next key. Ends
    with a NULL row."""
    one: ColumnElement[int] = literal_column("1")
    if by_workflow:
        # A row comparison, which only the (workflow_type, key) index answers: given `key > $k`
        # and the type as a filter, the planner walked idx_processing_jobs_due_by_limit_key past
        # every other type's jobs (its estimates assume the types spread evenly over keys).
        wanted: ColumnElement[str] = bindparam("workflow_type")
        scope = [QUEUED, JOBS.c.workflow_type == wanted]
        order = [JOBS.c.workflow_type, LIMIT_KEY]
        first = tuple_(*order) >= tuple_(wanted, literal_column("''"))
    else:
        scope, order, first = [QUEUED], [LIMIT_KEY], LIMIT_KEY.is_not(None)
    keys = (select(LIMIT_KEY.label("key")).where(*scope, first).order_by(*order).limit(one)).cte(
        "keys", recursive=True
    )
    past = tuple_(*order) > tuple_(wanted, keys.c.key) if by_workflow else keys.c.key < LIMIT_KEY
    after = select(LIMIT_KEY).where(*scope, past).order_by(*order).limit(one).correlate(keys)
    return keys.union_all(select(after.scalar_subquery()).where(keys.c.key.is_not(None)))


def _next_due(limit: ColumnElement[Any], by_workflow: bool) -> Select[Any]:
    """Up to `limit` due jobs, in claim order, locked. With no limited key due in the scope,
    the claim index as before; else each key's own due jobs (`_keys`), a limited key's at most
    its room, so that the jobs of a key at its limit (or paused) are never read: walking the
    claim index past them cost every claim of the other keys a heap fetch each (5,000 of them
    ahead: 0.8 ms a claim became 2.3 ms)."""
    scope = [CLAIMABLE]
    if by_workflow:
        scope.append(JOBS.c.workflow_type == bindparam("workflow_type"))
    limits = _limits(scope)
    limited = exists(select(limits.c.key))  # an InitPlan: computed once, gates each branch
    ordered = (JOBS.c.id, *CLAIM_COLUMNS)
    # correlate(None): these subqueries read processing_jobs itself, not the UPDATE's row.
    walk = (
        select(*ordered)
        .where(*scope, ~limited)
        .order_by(*CLAIM_ORDER)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .correlate(None)
        .subquery("walk")
    )
    keys = _keys(by_workflow)
    room = func.least(func.coalesce(limits.c.room, limit), limit)  # no limits row: unlimited
    of_key = (
        select(*ordered)
        .where(*scope, keys.c.key == LIMIT_KEY)
        .order_by(*CLAIM_ORDER)
        .limit(room)
        .with_for_update(skip_locked=True)
        .lateral("of_key")
    )
    by_key = (
        select(*(of_key.c[c.key] for c in ordered))
        .select_from(keys.outerjoin(limits, limits.c.key == keys.c.key).join(of_key, true()))
        .where(limited, keys.c.key.is_not(None), room > literal_column("0"))
    )
    candidates = union_all(select(*(walk.c[c.key] for c in ordered)), by_key).subquery("due")
    return (
        select(candidates.c.id).order_by(*_in_claim_order(candidates)).limit(limit).correlate(None)
    )


def _claim_update(n: int, by_workflow: bool) -> Update:
    """Claims up to n jobs. n is written into the SQL, a validated whole number, rather than
    bound: PostgreSQL plans a `LIMIT $n` for a tenth of the table, so the prepared statement's
    generic plan never won and every execution was planned anew (0.4 ms of a worker's 1.5 ms
    round; bench row "worker loop"). A worker asks for a handful of sizes, one statement each."""
    if type(n) is not int or not BATCH.admits(n):  # the callers checked it: never in the SQL
        raise ValueError(f"a claim's batch size must be a whole number 1..{MAX_BATCH}, got {n!r}")
    chosen = _next_due(literal_column(str(n)), by_workflow).scalar_subquery()
    which = JOBS.c.id == (chosen if n == 1 else any_(func.array(chosen)))
    return (
        update(JOBS)
        .values(
            status=constant(JobStatus.RUNNING),
            started_at=func.now(),
            attempts=JOBS.c.attempts + literal_column("1"),
            locked_until=func.now() + LEASE,
            lease_token=func.gen_random_uuid(),
        )
        .where(which)
        .returning(*COLUMNS)
    )


def _in_claim_order(claimed: CTE | Subquery) -> list[ColumnElement[Any]]:
    """RETURNING has no order: a batch comes back sorted by the claim index's own order (and
    the claim's candidates are picked in it)."""
    in_claimed = ClauseAdapter(claimed)
    return [in_claimed.traverse(expression) for expression in CLAIM_ORDER]  # type: ignore[arg-type]


@functools.cache  # at most MAX_BATCH sizes per scope
def claim_many_sql(n: int, by_workflow: bool) -> str:
    claimed = _claim_update(n, by_workflow).cte("claimed")
    return compiled(
        select(*(claimed.c[column.key] for column in COLUMNS)).order_by(*_in_claim_order(claimed))
    )


# [by workflow type?] -> SQL
CLAIM_ONE = {by: compiled(_claim_update(1, by)) for by in (False, True)}
IDS = bindparam("ids", type_=ARRAY(UUID))
TOKENS = bindparam("tokens", type_=ARRAY(UUID))
# NewJob is generated from the model (media_db/records.py), and so is every check of it.
NEW_JOB = Inputs(JOBS, NewJob, COLUMNS)
ENQUEUE_COLUMNS = tuple(NEW_JOB.columns)
# A value left out (None) is the column's own server default, read from the model.
DEFAULTED = tuple(name for name in ENQUEUE_COLUMNS if JOBS.c[name].server_default is not None)
_ENQUEUED = {
    name: func.coalesce(bindparam(name, type_=JOBS.c[name].type), _server_default(JOBS.c[name]))
    if name in DEFAULTED
    else bindparam(name, type_=JOBS.c[name].type)
    for name in ENQUEUE_COLUMNS
}
# A key that is live conflicts with the index and nothing is written: the speculative insert
# checks the index first, so no row (not even a dead one) is left behind.
_DEDUPED: dict[str, Any] = {"index_elements": [JOBS.c.dedupe_key], "index_where": LIVE_KEY}
ENQUEUE = compiled(
    insert(JOBS).values(**_ENQUEUED).on_conflict_do_nothing(**_DEDUPED).returning(*COLUMNS)
)
LIVE_BY_KEY = compiled(
    select(*COLUMNS).where(JOBS.c.dedupe_key == bindparam("dedupe_key"), LIVE_KEY)
)
# How many times enqueue looks for the live job holding a key it could not insert, and inserts
# again if that job finished meanwhile: each miss needs the job to finish between two statements.
DEDUPE_TRIES = 10
# COPY cannot say DEFAULT nor ON CONFLICT: it writes a batch that leaves each defaulted column
# out in every job or in none, and sets no dedupe_key.
ALWAYS_COPIED = tuple(n for n in ENQUEUE_COLUMNS if n not in DEFAULTED and n != "dedupe_key")
_BATCH = (
    func.unnest(
        *(bindparam(f"{name}s", type_=ARRAY(JOBS.c[name].type)) for name in ENQUEUE_COLUMNS)
    )
    .table_valued(*ENQUEUE_COLUMNS)
    .render_derived()
    .alias("batch")
)
ENQUEUE_MANY = compiled(
    insert(JOBS)
    .from_select(
        list(ENQUEUE_COLUMNS),
        select(
            *(
                func.coalesce(_BATCH.c[name], _server_default(JOBS.c[name]))
                if name in DEFAULTED
                else _BATCH.c[name]
                for name in ENQUEUE_COLUMNS
            )
        ),
    )
    .on_conflict_do_nothing(**_DEDUPED)
)
_HELD = func.unnest(IDS, TOKENS).table_valued("id", "token").render_derived().alias("held")
HELD_BY_US = (JOBS.c.id == _HELD.c.id, JOBS.c.lease_token == _HELD.c.token, STILL_RUNNING)
EXTEND = compiled(
    update(JOBS).values(locked_until=func.now() + LEASE).where(*HELD_BY_US).returning(JOBS.c.id)
)
_COMPLETE_HELD = (
    update(JOBS)
    .values(status=constant(JobStatus.COMPLETED), completed_at=func.now(), **NO_LEASE)
    .where(*HELD_BY_US)
)
COMPLETE_HELD = compiled(_COMPLETE_HELD.returning(*COLUMNS))


@functools.cache  # at most MAX_BATCH sizes per scope
def complete_and_claim_sql(n: int, by_workflow: bool) -> str:
    """A worker's round in one statement (one round trip, one commit): the held jobs whose
    handlers returned are completed and up to n due ones claimed. The two UPDATEs touch
    disjoint rows (running, queued). A LEFT JOIN onto the completed ids' one-row aggregate
    returns them even when nothing was claimed: (completed ids, *claimed job's columns)."""
    done = _COMPLETE_HELD.returning(JOBS.c.id).cte("done")
    claimed = _claim_update(n, by_workflow).cte("claimed")
    completed = select(func.array_agg(done.c.id).label("completed")).subquery("completed")
    return compiled(
        select(completed.c.completed, *(claimed.c[column.key] for column in COLUMNS))
        .select_from(completed.outerjoin(claimed, true()))
        .order_by(*_in_claim_order(claimed))
    )


_FAILED_HELD = (
    func.unnest(
        IDS,
        TOKENS,
        bindparam("errors", type_=ARRAY(Text)),
        bindparam("tracebacks", type_=ARRAY(Text)),
        bindparam("delays", type_=ARRAY(Interval)),
    )
    .table_valued("id", "token", "error", "traceback", "delay")
    .render_derived()
    .alias("attempt")
)
SPENT = JOBS.c.attempts >= JOBS.c.max_attempts
FAIL_HELD = compiled(
    update(JOBS)
    .values(
        status=case((SPENT, constant(JobStatus.FAILED)), else_=constant(JobStatus.QUEUED)),
        completed_at=case((SPENT, func.now()), else_=null()),
        run_at=case((SPENT, JOBS.c.run_at), else_=func.now() + _FAILED_HELD.c.delay),
        error_message=_FAILED_HELD.c.error,
        error_traceback=_FAILED_HELD.c.traceback,
        **NO_LEASE,
    )
    .where(
        JOBS.c.id == _FAILED_HELD.c.id, JOBS.c.lease_token == _FAILED_HELD.c.token, STILL_RUNNING
    )
    .returning(*COLUMNS)
)
COMPLETE_MANY = compiled(
    update(JOBS)
    .values(status=constant(JobStatus.COMPLETED), completed_at=func.now(), **NO_LEASE)
    .where(JOBS.c.id == any_(IDS), STILL_RUNNING)
    .returning(*COLUMNS)
)
_FAILURES = (
    func.unnest(IDS, bindparam("errors", type_=ARRAY(Text)))
    .table_valued("id", "error")
    .render_derived()
    .alias("failure")
)
FAIL_MANY = compiled(
    update(JOBS)
    .values(
        status=constant(JobStatus.FAILED),
        completed_at=func.now(),
        error_message=_FAILURES.c.error,
        error_traceback=null(),  # an operator's message, no traceback
        **NO_LEASE,
    )
    .where(JOBS.c.id == _FAILURES.c.id, STILL_RUNNING)
    .returning(*COLUMNS)
)
# A job handed back unfinished (its worker stopping) gets its attempt back.
_HANDED_BACK = {
    "status": constant(JobStatus.QUEUED),
    "started_at": null(),
    "attempts": func.greatest(JOBS.c.attempts - literal_column("1"), literal_column("0")),
    **NO_LEASE,
}
# A snooze (the handler raised RetryAfter): handed back, due after its delay, counted.
_SNOOZED = (
    func.unnest(IDS, TOKENS, bindparam("delays", type_=ARRAY(Interval)))
    .table_valued("id", "token", "delay")
    .render_derived()
    .alias("snooze")
)
SNOOZE_HELD = compiled(
    update(JOBS)
    .values(
        # Its start is kept, as a failed attempt's is: the provider was called, and a key's
        # per_second limit counts the starts of the last second (a 429 storm's included).
        **{**_HANDED_BACK, "started_at": JOBS.c.started_at},
        run_at=func.now() + _SNOOZED.c.delay,
        snoozes=JOBS.c.snoozes + literal_column("1"),
    )
    .where(JOBS.c.id == _SNOOZED.c.id, JOBS.c.lease_token == _SNOOZED.c.token, STILL_RUNNING)
    .returning(*COLUMNS)
)
RELEASE = compiled(
    update(JOBS)
    .values(**_HANDED_BACK)
    .where(JOBS.c.id == any_(IDS), STILL_RUNNING)
    .returning(JOBS.c.id)
)
RELEASE_HELD = compiled(update(JOBS).values(**_HANDED_BACK).where(*HELD_BY_US).returning(JOBS.c.id))
# Leases that ran out: their worker died (or lost the database for longer than a lease).
_EXPIRED = (
    select(JOBS.c.id)
    .where(RUNNING, JOBS.c.locked_until < func.now())
    .limit(literal_column(str(MAX_BATCH)))
    .with_for_update(skip_locked=True)
    .correlate(None)
    .scalar_subquery()
)
RESCUE = compiled(
    update(JOBS)
    .values(
        status=case((SPENT, constant(JobStatus.FAILED)), else_=constant(JobStatus.QUEUED)),
        completed_at=case((SPENT, func.now()), else_=null()),
        error_message=case(
            (SPENT, literal_column("'lease expired: its worker stopped answering'")),
            else_=JOBS.c.error_message,
        ),
        # The traceback goes with the error it explains: this one has none.
        error_traceback=case((SPENT, null()), else_=JOBS.c.error_traceback),
        started_at=null(),
        **NO_LEASE,
    )
    .where(JOBS.c.id == any_(func.array(_EXPIRED)))
    .returning(*COLUMNS)
)
# Running jobs claimed before leases existed (revision 0010) have none: age is all there is.
REQUEUE_STUCK = compiled(
    update(JOBS)
    .values(status=constant(JobStatus.QUEUED), started_at=null(), **NO_LEASE)
    .where(
        RUNNING,
        JOBS.c.started_at < func.now() - bindparam("older_than", type_=Interval),
        or_(JOBS.c.locked_until.is_(None), JOBS.c.locked_until < func.now()),
    )
    .returning(JOBS.c.id)
)
FAILED = JOBS.c.status == constant(JobStatus.FAILED)
# Retried by hand: due now, its attempts reset; its last error and traceback are kept.
_REQUEUED = {
    "status": constant(JobStatus.QUEUED),
    "attempts": literal_column("0"),
    "run_at": func.now(),
    "started_at": null(),
    "completed_at": null(),
    **NO_LEASE,
}
_OTHER = JOBS.alias("other")


def _free_key(same_set: Any) -> ColumnElement[bool]:
    """A failed job goes back only if its dedupe key is free: no live job holds it, and no other
    job of the same retry (`same_set`, on `_OTHER`) with that key comes first (the lowest id)."""
    return or_(
        JOBS.c.dedupe_key.is_(None),
        ~exists().where(
            _OTHER.c.dedupe_key == JOBS.c.dedupe_key,
            or_(
                _OTHER.c.status.in_([constant(JobStatus.QUEUED), constant(JobStatus.RUNNING)]),
                and_(
                    _OTHER.c.status == constant(JobStatus.FAILED),
                    _OTHER.c.id < JOBS.c.id,
                    same_set,
                ),
            ),
        ),
    )


RETRY = compiled(
    update(JOBS)
    .values(**_REQUEUED)
    .where(JOBS.c.id == any_(IDS), FAILED, _free_key(_OTHER.c.id == any_(IDS)))
    .returning(JOBS.c.id)
)
# The failed jobs of one workflow type, a batch at a time (rows another session holds are
# skipped, to be taken by the next batch or the next run).
_FAILED_OF_TYPE = (
    select(JOBS.c.id)
    .where(
        FAILED,
        JOBS.c.workflow_type == bindparam("workflow_type"),
        _free_key(_OTHER.c.workflow_type == JOBS.c.workflow_type),
    )
    .limit(bindparam("batch", type_=Integer))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
RETRY_WORKFLOW = compiled(
    update(JOBS)
    .values(**_REQUEUED)
    .where(JOBS.c.id == any_(func.array(_FAILED_OF_TYPE)))
    .returning(JOBS.c.id)
)
_PRUNABLE = (
    select(JOBS.c.id)
    .where(
        JOBS.c.status.in_([constant(status) for status in FINISHED]),
        JOBS.c.completed_at < func.now() - bindparam("older_than", type_=Interval),
    )
    .limit(bindparam("batch", type_=Integer))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
PRUNE = compiled(delete(JOBS).where(JOBS.c.id == any_(func.array(_PRUNABLE))))
HAS_WORK = {
    by: compiled(
        select(
            exists().where(
                JOBS.c.status.in_([constant(JobStatus.QUEUED), constant(JobStatus.RUNNING)]),
                *([JOBS.c.workflow_type == bindparam("workflow_type")] if by else []),
            )
        )
    )
    for by in (False, True)
}
# [by workflow type?] -> SQL
BY_STATUS = {
    by: compiled(
        select(*COLUMNS)
        .where(
            JOBS.c.status == bindparam("status", type_=String),
            *([JOBS.c.workflow_type == bindparam("workflow_type")] if by else []),
        )
        .order_by(*CLAIM_ORDER)
        .limit(bindparam("limit", type_=Integer))
    )
    for by in (False, True)
}
BY_ID = compiled(select(*COLUMNS).where(JOBS.c.id == bindparam("id")))
COUNTS = compiled(select(JOBS.c.status, func.count()).group_by(JOBS.c.status))
_MOVE = (
    update(JOBS)
    .values(
        status=bindparam("to", type_=String),
        completed_at=func.now(),
        error_message=func.coalesce(bindparam("error", type_=Text), JOBS.c.error_message),
        # A new error (an operator's `fail`) has no traceback; the last one stays otherwise.
        error_traceback=case(
            (bindparam("error", type_=Text).is_(None), JOBS.c.error_traceback), else_=null()
        ),
        **NO_LEASE,
    )
    .where(
        JOBS.c.id == bindparam("id"),
        _once_found(JOBS.c.status == any_(bindparam("allowed", type_=ARRAY(String)))),
    )
    .returning(*COLUMNS)
)
MOVE = compiled(_MOVE)
# A running job's worker hears of its cancel at once: the notification goes out on the channel
# idle workers LISTEN on for new jobs (media_analysis_jobs), its payload CANCEL_PREFIX + id,
# sent when the cancel commits (its worker also polls its jobs' status, the fallback).
CANCEL_PREFIX = "cancel:"
_cancelled = _MOVE.cte("cancelled")
CANCEL = compiled(
    select(
        *(_cancelled.c[column.key] for column in COLUMNS),
        func.pg_notify(
            constant(JOBS_CHANNEL), constant(CANCEL_PREFIX).concat(cast(_cancelled.c.id, Text))
        ),
    )
)
_HELD_IDS = select(JOBS.c.id).where(
    JOBS.c.id == any_(IDS), _once_found(JOBS.c.status == constant(JobStatus.CANCELLED))
)
CANCELLED_AMONG = compiled(_HELD_IDS)
STATUS_OF = compiled(select(JOBS.c.status).where(JOBS.c.id == bindparam("id")))


LIMIT_COLUMNS = record_columns(LIMITS, LimitRecord)
LIMIT_KEY_LENGTH = max_length(LIMITS.c.key)
MAX_RUNNING = bounds(LIMITS.c.max_running)
PER_SECOND = bounds(LIMITS.c.per_second)  # NUMERIC, > 0: a Decimal kept to the last digit
_KEY = bindparam("key", type_=LIMITS.c.key.type)
_THE_KEY = LIMITS.c.key == _KEY
_SETS_NO_LIMIT = and_(LIMITS.c.max_running.is_(None), LIMITS.c.per_second.is_(None))
_upsert = insert(LIMITS)
SET_LIMIT = compiled(
    _upsert.values(
        key=_KEY,
        max_running=bindparam("max_running", type_=LIMITS.c.max_running.type),
        per_second=bindparam("per_second", type_=LIMITS.c.per_second.type),
    )
    .on_conflict_do_update(
        index_elements=[LIMITS.c.key],
        set_={
            "max_running": _upsert.excluded.max_running,
            "per_second": _upsert.excluded.per_second,
            "updated_at": func.now(),
        },
    )
    .returning(*LIMIT_COLUMNS)
)
PAUSE = compiled(
    _upsert.values(key=_KEY, paused=true())
    .on_conflict_do_update(
        index_elements=[LIMITS.c.key], set_={"paused": true(), "updated_at": func.now()}
    )
    .returning(*LIMIT_COLUMNS)
)


def _unset(values: Mapping[str, Any], still_needed: ColumnElement[bool]) -> str:
    """Unsets a key's limits or its pause: the row stays when it still sets something
    (`still_needed`), else it goes. Both in one statement, one snapshot: each row meets one."""
    gone = delete(LIMITS).where(_THE_KEY, ~still_needed).returning(LIMITS.c.key).cte("gone")
    kept = (
        update(LIMITS)
        .values(**values, updated_at=func.now())
        .where(_THE_KEY, still_needed)
        .returning(LIMITS.c.key)
    )
    return compiled(kept.add_cte(gone))


CLEAR_LIMIT = _unset({"max_running": null(), "per_second": null()}, LIMITS.c.paused)
RESUME = _unset({"paused": false()}, ~_SETS_NO_LIMIT)
ALL_LIMITS = compiled(select(*LIMIT_COLUMNS).order_by(LIMITS.c.key))


def _copied(rows: list[tuple[Any, ...]]) -> tuple[str, ...] | None:
    """The columns COPY writes for these jobs, or None when it cannot write them: a defaulted
    column some give and some leave out, or a dedupe_key (its conflict needs the INSERT)."""
    given = {name for i, name in enumerate(ENQUEUE_COLUMNS) if any(r[i] is not None for r in rows)}
    left_out = {name for i, name in enumerate(ENQUEUE_COLUMNS) if any(r[i] is None for r in rows)}
    if "dedupe_key" in given or given & left_out & set(DEFAULTED):
        return None
    return tuple(
        n for n in ENQUEUE_COLUMNS if n in ALWAYS_COPIED or (n in given and n in DEFAULTED)
    )


def traceback_text(value: str | None) -> str | None:
    """A traceback as stored: its last TRACEBACK_LIMIT characters (the end is where the error
    was raised), marked when cut; NUL and surrogates replaced, as in every error text."""
    if value is None or not value.strip():
        return None
    if len(value) > TRACEBACK_LIMIT:
        marker = "[... cut: the last {} of {:,} characters follow]\n"
        value = marker.format(TRACEBACK_LIMIT, len(value)) + value[-TRACEBACK_LIMIT:]
    return validation.error_text("traceback", value)


def _snooze_delay(delay: object) -> timedelta:
    if not isinstance(delay, timedelta) or delay < timedelta(0):
        raise InvalidInput("delay", f"must be a timedelta of 0 or more, got {delay!r}")
    return delay


def backoff(attempt: int, base: timedelta) -> timedelta:
    """How long a job waits after its `attempt`-th failure: `base` doubling at each attempt,
    capped at MAX_BACKOFF, with full jitter in [50 %, 150 %) so that jobs failed together
    (a provider's outage) do not all come back at the same instant."""
    exponential = min(base * 2 ** max(attempt - 1, 0), MAX_BACKOFF)
    jittered: timedelta = exponential * random.uniform(0.5, 1.5)  # noqa: S311 - not a secret
    return jittered


class JobQueue:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def enqueue(
        self,
        workflow_type: str | NewJob,
        priority: int | None = None,
        media_item_id: uuid.UUID | str | None = None,
        *,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        max_snoozes: int | None = None,
        dedupe_key: str | None = None,
        limit_key: str | None = None,
    ) -> JobRecord:
        """A new queued job (a NewJob, every column a caller may set, or its usual fields as
        arguments), never claimed before `run_at` (default: now), failed for good
        after `max_attempts` failed attempts (default: the column's, 5); its handler may
        snooze it (RetryAfter) `max_snoozes` times (default: the column's, 100). With a
        `dedupe_key` that a live (queued or running) job holds, nothing is written and that
        job is returned; once it finished, the key is free again. `limit_key`: the key its
        limits and pause are looked up by (None: its workflow type; set_limit)."""
        job = workflow_type
        if not isinstance(job, NewJob):
            job = NewJob(
                job,
                priority=priority,
                media_item_id=media_item_id,
                run_at=run_at,
                max_attempts=max_attempts,
                max_snoozes=max_snoozes,
                dedupe_key=dedupe_key,
                limit_key=limit_key,
            )
        values = dict(zip(ENQUEUE_COLUMNS, NEW_JOB.row(job), strict=True))
        dedupe_key = values["dedupe_key"]
        for _ in range(DEDUPE_TRIES):
            with media_item_must_exist():
                row = await fetch_one(self.db, ENQUEUE, values, JobRecord.from_row)
            if row is None:  # its key is live: the job holding it, read in a new snapshot
                key = {"dedupe_key": dedupe_key}
                row = await fetch_one(self.db, LIVE_BY_KEY, key, JobRecord.from_row)
            if row is not None:
                return row
        raise InvalidTransition(
            f"dedupe_key {dedupe_key!r}: its live job finished {DEDUPE_TRIES} times while this "
            "enqueue looked for it; enqueue it again"
        )

    async def enqueue_many(self, jobs: Iterable[NewJob]) -> int:
        """Bulk path: every job is checked first, then all go in one statement (COPY when none
        sets run_at, max_attempts, max_snoozes or dedupe_key): all are written or none, but
        for a job whose dedupe_key is live (or taken by an earlier job of the batch), which is
        left out. Returns the number written."""
        rows = list(validation.each_checked(jobs, NEW_JOB.row))
        if not rows:
            return 0
        copied = _copied(rows)
        with media_item_must_exist():
            async with self.db.connection() as connection:
                if copied is not None:
                    at = [ENQUEUE_COLUMNS.index(name) for name in copied]
                    statement = copy_from_stdin(JOBS, copied)
                    async with connection.cursor() as cursor, cursor.copy(statement) as copy:
                        for row in rows:
                            await copy.write_row([row[i] for i in at])
                    return len(rows)
                by_column = zip(ENQUEUE_COLUMNS, zip(*rows, strict=True), strict=True)
                columns = {f"{name}s": list(values) for name, values in by_column}
                return (await connection.execute(ENQUEUE_MANY, columns)).rowcount

    async def claim(
        self, workflow_type: str | None = None, lease: timedelta = DEFAULT_LEASE
    ) -> JobRecord | None:
        """Moves the next due job to `running`, leased for `lease`, and returns it; None when
        nothing is due."""
        params = {
            **self._workflow(workflow_type),
            "lease": validation.positive_duration("lease", lease),
        }
        return await fetch_one(
            self.db, CLAIM_ONE["workflow_type" in params], params, JobRecord.from_row
        )

    async def claim_many(
        self, n: int, workflow_type: str | None = None, lease: timedelta = DEFAULT_LEASE
    ) -> list[JobRecord]:
        """Moves up to n due jobs to `running` in one statement, each leased for `lease`, and
        returns them in claim order; an empty list when nothing is due."""
        size = validation.whole_number("n", n, BATCH)
        params = {
            **self._workflow(workflow_type),
            "lease": validation.positive_duration("lease", lease),
        }
        statement = claim_many_sql(size, "workflow_type" in params)
        return await fetch_all(self.db, statement, params, JobRecord.from_row)

    async def extend(self, jobs: Sequence[JobRecord], lease: timedelta) -> set[uuid.UUID]:
        """Renews the leases of the listed jobs this holder still holds, to now + `lease`;
        returns their ids (a job missing from it was lost: its lease expired and it may run
        elsewhere)."""
        if not jobs:
            return set()
        params = {**self._held(jobs), "lease": validation.positive_duration("lease", lease)}
        return set(await fetch_all(self.db, EXTEND, params, _first))

    async def complete_and_claim(
        self,
        completed: Sequence[JobRecord],
        n: int,
        workflow_type: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
    ) -> tuple[set[uuid.UUID], list[JobRecord]]:
        """`complete_held(completed)` and `claim_many(n, ...)` in one statement: the ids of
        the jobs completed (those still held), and the jobs claimed, in claim order."""
        if not completed:
            return set(), await self.claim_many(n, workflow_type, lease)
        size = validation.whole_number("n", n, BATCH)
        params = {
            **self._held(completed),
            **self._workflow(workflow_type),
            "lease": validation.positive_duration("lease", lease),
        }
        statement = complete_and_claim_sql(size, "workflow_type" in params)
        rows = await fetch_all(self.db, statement, params, tuple)
        claimed = [JobRecord.from_row(row[1:]) for row in rows if row[1] is not None]
        return set(rows[0][0] or ()), claimed

    async def complete_held(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        """Marks completed each listed job whose lease this holder still holds."""
        if not jobs:
            return []
        return await fetch_all(self.db, COMPLETE_HELD, self._held(jobs), JobRecord.from_row)

    async def fail_held(
        self,
        failures: Sequence[tuple[JobRecord, str] | tuple[JobRecord, str, str | None]],
        retry_backoff: timedelta,
    ) -> list[JobRecord]:
        """Each listed job still held goes back `queued`, due after a jittered exponential
        backoff, or, when its attempts are spent, becomes `failed` with its error kept. A
        failure is (job, error) or (job, error, traceback): the traceback is stored in
        `error_traceback`, its last TRACEBACK_LIMIT characters (None: NULL)."""
        if not failures:
            return []
        validation.positive_duration("retry_backoff", retry_backoff)
        held = self._held([failure[0] for failure in failures])
        params = {
            **held,
            "errors": [validation.error_text("error", failure[1]) for failure in failures],
            "tracebacks": [
                traceback_text(failure[2]) if len(failure) == 3 else None for failure in failures
            ],
            "delays": [backoff(failure[0].attempts, retry_backoff) for failure in failures],
        }
        return await fetch_all(self.db, FAIL_HELD, params, JobRecord.from_row)

    async def snooze_held(self, snoozes: Sequence[tuple[JobRecord, timedelta]]) -> list[JobRecord]:
        """Each listed job still held goes back `queued`, due after its delay, its attempt given
        back and `snoozes` counted (a handler's RetryAfter). Whether a job may still snooze
        (`snoozes < max_snoozes`) is the caller's to decide (the worker fails the attempt past
        it). Returns the jobs snoozed."""
        if not snoozes:
            return []
        params = {
            **self._held([job for job, _ in snoozes]),
            "delays": [_snooze_delay(delay) for _, delay in snoozes],
        }
        return await fetch_all(self.db, SNOOZE_HELD, params, JobRecord.from_row)

    async def release_held(self, jobs: Sequence[JobRecord]) -> list[uuid.UUID]:
        """Hands back unfinished jobs this holder still holds (a worker stopping): queued
        again, the attempt not counted."""
        if not jobs:
            return []
        return await fetch_all(self.db, RELEASE_HELD, self._held(jobs), _first)

    async def rescue_expired(self) -> list[JobRecord]:
        """Running jobs whose lease ran out go back to the queue (their next claim is another
        attempt), or become `failed` when their attempts are spent. Up to MAX_BATCH a call."""
        return await fetch_all(self.db, RESCUE, {}, JobRecord.from_row)

    async def retry(self, job_ids: Iterable[uuid.UUID | str]) -> list[uuid.UUID]:
        """Puts failed jobs back in the queue by hand, due now, with their attempts reset.
        Returns the ids requeued (a listed job that is not `failed`, or whose dedupe_key a live
        job holds, is left as it is)."""
        keys = self._ids(job_ids)
        if not keys:
            return []
        with _key_taken_meanwhile():
            return await fetch_all(self.db, RETRY, {"ids": keys}, _first)

    async def retry_workflow(
        self, workflow_type: str, batch: int = MAX_BATCH, progress: Progress | None = None
    ) -> int:
        """Puts every failed job of `workflow_type` back in the queue, as `retry` does, `batch`
        at a time, each batch its own short transaction. Returns how many went back."""
        params = {
            **self._workflow(workflow_type),
            "batch": validation.whole_number("batch", batch, BATCH),
        }
        total = 0
        while requeued := await self._retry_batch(params):
            total += len(requeued)
            if progress is not None:
                progress(total)
        return total

    async def _retry_batch(self, params: Mapping[str, Any]) -> list[uuid.UUID]:
        with _key_taken_meanwhile():
            return await fetch_all(self.db, RETRY_WORKFLOW, params, _first)

    async def prune(
        self, older_than: timedelta, batch: int = PRUNE_BATCH, progress: Progress | None = None
    ) -> int:
        """Deletes finished jobs (completed, cancelled, failed) that finished more than
        `older_than` ago, `batch` at a time, each batch its own short transaction. Returns how
        many went."""
        validation.whole_number("batch", batch, validation.Bounds(whole=True, low=1))
        params = {
            "older_than": validation.positive_duration("older_than", older_than),
            "batch": batch,
        }
        return await delete_in_batches(self.db, PRUNE, params, progress)

    async def has_work(self, workflow_type: str | None = None) -> bool:
        """Is any job queued (due or not) or running, of this workflow type if given?"""
        params = self._workflow(workflow_type)
        found = await fetch_one(self.db, HAS_WORK["workflow_type" in params], params, _first)
        return bool(found)

    async def complete(self, job_id: uuid.UUID | str) -> JobRecord:
        return await self._move(job_id, [JobStatus.RUNNING], JobStatus.COMPLETED)

    async def complete_many(self, job_ids: Iterable[uuid.UUID | str]) -> list[JobRecord]:
        """Marks each listed job that is `running` completed, in one statement, and returns
        those, whoever holds them (an operator's verb; workers use `complete_held`). A listed
        job no longer running is left as it is and not returned. A malformed id writes
        nothing."""
        keys = self._ids(job_ids)
        if not keys:
            return []
        return await fetch_all(self.db, COMPLETE_MANY, {"ids": keys}, JobRecord.from_row)

    async def fail(self, job_id: uuid.UUID | str, error_message: str) -> JobRecord:
        message = validation.error_text("error_message", error_message)
        return await self._move(job_id, [JobStatus.RUNNING], JobStatus.FAILED, message)

    async def fail_many(self, errors: Mapping[uuid.UUID | str, str]) -> list[JobRecord]:
        """`complete_many`'s twin: each listed running job becomes `failed` for good with its
        message, no retry."""
        keys = self._ids(errors)
        messages = [validation.error_text("error_message", errors[key]) for key in errors]
        if not keys:
            return []
        params = {"ids": keys, "errors": messages}
        return await fetch_all(self.db, FAIL_MANY, params, JobRecord.from_row)

    async def release(self, job_ids: Iterable[uuid.UUID | str]) -> list[uuid.UUID]:
        """Puts listed jobs that are still `running` back in the queue, whoever holds them.
        Returns the ids requeued."""
        keys = self._ids(job_ids)
        if not keys:
            return []
        return await fetch_all(self.db, RELEASE, {"ids": keys}, _first)

    async def cancel(self, job_id: uuid.UUID | str) -> JobRecord:
        """Cancels a queued or running job. A running one's worker hears of it at once (a
        notification, sent when the cancel commits; its polling is the fallback) and cancels
        the handler's task: the job stays `cancelled`, its lease released, and no outcome is
        written over it (only a running job's holder writes one)."""
        allowed = [JobStatus.QUEUED, JobStatus.RUNNING]
        return await self._move(job_id, allowed, JobStatus.CANCELLED, statement=CANCEL)

    async def cancelled_among(self, job_ids: Iterable[uuid.UUID | str]) -> set[uuid.UUID]:
        """Which of the listed jobs are `cancelled` (a worker's fallback check of its jobs)."""
        keys = self._ids(job_ids)
        if not keys:
            return set()
        return set(await fetch_all(self.db, CANCELLED_AMONG, {"ids": keys}, _first))

    async def requeue_stuck(self, older_than: timedelta) -> list[uuid.UUID]:
        """Jobs `running` for longer than `older_than` whose lease (if any) has expired go
        back to the queue: a live worker's leased job is never taken from it."""
        params = {"older_than": validation.positive_duration("older_than", older_than)}
        return await fetch_all(self.db, REQUEUE_STUCK, params, _first)

    async def by_status(
        self, status: JobStatus | str, limit: int = 100, workflow_type: str | None = None
    ) -> list[JobRecord]:
        """Jobs in one status (of one workflow type, if given), in claim order."""
        wanted = validation.as_status(JobStatus, "status", status)
        params = {
            **self._workflow(workflow_type),
            "status": wanted,
            "limit": validation.whole_number("limit", limit, PAGE),
        }
        statement = BY_STATUS["workflow_type" in params]
        return await fetch_all(self.db, statement, params, JobRecord.from_row)

    async def get(self, job_id: uuid.UUID | str) -> JobRecord:
        """One job by id (NotFound if there is none)."""
        key = validation.as_uuid("job_id", job_id)
        row = await fetch_one(self.db, BY_ID, {"id": key}, JobRecord.from_row)
        if row is None:
            raise NotFound(f"job {key} does not exist")
        return row

    async def counts(self) -> dict[JobStatus, int]:
        """Jobs per status, every status present (zero when none)."""
        found = dict(await fetch_all(self.db, COUNTS, {}, tuple))
        return {status: found.get(status, 0) for status in JobStatus}

    async def set_limit(
        self,
        key: str,
        max_running: int | None = None,
        per_second: float | Decimal | None = None,
    ) -> LimitRecord:
        """Limits the jobs of `key` (a job's limit_key, else its workflow type) across every
        worker: at most `max_running` running at once, at most `per_second` started per second
        (above 1, its whole part: 2.5 is 2; below 1, one start per 1/per_second s). None: no
        such limit. Replaces the key's
        limits (its pause stays); the next claims apply them."""
        name = validation.required_text("key", key, LIMIT_KEY_LENGTH)
        if max_running is None and per_second is None:
            raise InvalidInput(
                "set_limit", f"give max_running or per_second for {name!r} (clear_limit removes)"
            )
        params = {
            "key": name,
            "max_running": validation.number("max_running", max_running, MAX_RUNNING),
            "per_second": validation.number("per_second", per_second, PER_SECOND),
        }
        row = await fetch_one(self.db, SET_LIMIT, params, LimitRecord.from_row)
        assert row is not None  # an upsert returns its row
        return row

    async def clear_limit(self, key: str) -> None:
        """Removes the limits of `key` (its jobs are claimed without; a pause stays)."""
        name = validation.required_text("key", key, LIMIT_KEY_LENGTH)
        await fetch_all(self.db, CLEAR_LIMIT, {"key": name}, _first)

    async def pause(self, key: str) -> LimitRecord:
        """Pauses `key` (a job's limit_key, else its workflow type): none of its jobs is
        claimed until `resume(key)`; those running finish. Its limits stay."""
        name = validation.required_text("key", key, LIMIT_KEY_LENGTH)
        row = await fetch_one(self.db, PAUSE, {"key": name}, LimitRecord.from_row)
        assert row is not None  # an upsert returns its row
        return row

    async def resume(self, key: str) -> None:
        """Claims of `key`'s jobs start again (within its limits, if any)."""
        name = validation.required_text("key", key, LIMIT_KEY_LENGTH)
        await fetch_all(self.db, RESUME, {"key": name}, _first)

    async def limits(self) -> list[LimitRecord]:
        """Every key's limits and pause, by key."""
        return await fetch_all(self.db, ALL_LIMITS, {}, LimitRecord.from_row)

    @staticmethod
    def _workflow(workflow_type: str | None) -> dict[str, str]:
        if workflow_type is None:
            return {}
        validation.required_text("workflow_type", workflow_type, WORKFLOW_TYPE_LENGTH)
        return {"workflow_type": workflow_type}

    @staticmethod
    def _held(jobs: Sequence[JobRecord]) -> dict[str, list[uuid.UUID | None]]:
        if len(jobs) > MAX_BATCH:
            raise InvalidInput("jobs", f"at most {MAX_BATCH} at once, got {len(jobs)}")
        return {"ids": [job.id for job in jobs], "tokens": [job.lease_token for job in jobs]}

    @staticmethod
    def _ids(job_ids: Iterable[uuid.UUID | str]) -> list[uuid.UUID]:
        if isinstance(job_ids, str | uuid.UUID):
            raise InvalidInput("job_ids", "must be a collection of ids, not one id")
        keys = [validation.as_uuid("job_ids", key) for key in job_ids]
        if len(keys) > MAX_BATCH:
            raise InvalidInput("job_ids", f"at most {MAX_BATCH} at once, got {len(keys)}")
        return keys

    async def _move(
        self,
        job_id: uuid.UUID | str,
        allowed: list[JobStatus],
        to: JobStatus,
        error_message: str | None = None,
        statement: str = MOVE,
    ) -> JobRecord:
        key = validation.as_uuid("job_id", job_id)
        values: dict[str, Any] = {"to": to, "error": error_message, "id": key, "allowed": allowed}
        # The record's columns first (CANCEL adds its notification's result after them).
        row = await fetch_one(
            self.db, statement, values, lambda found: JobRecord.from_row(found[: len(COLUMNS)])
        )
        if row is not None:
            return row
        found = await fetch_one(self.db, STATUS_OF, {"id": key}, _first)
        if found is None:
            raise NotFound(f"job {key} does not exist")
        wanted = " or ".join(allowed)
        raise InvalidTransition(f"job {key} is {found}, not {wanted}: cannot mark it {to}")


@contextlib.contextmanager
def _key_taken_meanwhile() -> Iterator[None]:
    """A retry skips jobs whose dedupe key is live; one enqueued between its check and its
    write is refused by the index, and the retry with it (nothing written)."""
    try:
        yield
    except psycopg.errors.UniqueViolation:
        raise InvalidTransition(
            "retry: a job with the same dedupe_key was enqueued meanwhile; nothing was "
            "requeued: run the retry again (it skips jobs whose key is live)"
        ) from None


def _first(row: Sequence[Any]) -> Any:
    return row[0]

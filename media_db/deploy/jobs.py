"""`make jobs` and `make retry` (`python -m media_db.deploy.jobs list|retry`): the operator's
view of the queue's jobs, and putting failed ones back.

    make jobs                      # failed jobs (STATUS=failed is the default), last error each
    make jobs STATUS=queued WORKFLOW=transcode
    make jobs ID=<job id>          # one job, every column, and its last traceback
    make retry ID=<job id>[,<job id>...]
    make retry WORKFLOW=transcode  # every failed job of that workflow type

A retried job is queued, due now, its attempts reset; its last error and traceback stay until
its next failure overwrites them.

Exit status: 0 done, 2 a bad value (one line saying which and what is wanted), 3 the database
cannot be reached.
"""

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence

from media_db import Database, JobQueue, JobRecord, JobStatus
from media_db.errors import EXIT_UNAVAILABLE, DatabaseUnavailable, InvalidInput, NotFound
from media_db.repositories.common import MAX_PAGE

APPLICATION = "media-analysis-jobs"
EXIT_USAGE = 2


class Usage(ValueError):
    """A bad value on the command line: one line, what is wrong and what is wanted."""


def job_ids(value: str) -> list[uuid.UUID]:
    """ID=: one job id or several, separated by commas or spaces."""
    ids = []
    for word in value.replace(",", " ").split():
        try:
            ids.append(uuid.UUID(word))
        except ValueError:
            raise Usage(
                f"ID={word!r} is not a job id: give a UUID as `make jobs` prints it "
                "(several: ID=<id>,<id>)"
            ) from None
    if not ids:
        raise Usage(f"ID={value!r} holds no job id: give a UUID as `make jobs` prints it")
    return ids


def status_of(value: str) -> JobStatus:
    try:
        return JobStatus(value or JobStatus.FAILED)
    except ValueError:
        raise Usage(
            f"STATUS={value!r} is not a job status: use one of {', '.join(JobStatus)}"
        ) from None


def one_line(text: str | None, width: int = 160) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _when(job: JobRecord) -> str:
    moment = job.completed_at or job.started_at or job.run_at
    return f"{moment:%Y-%m-%d %H:%M:%S}Z" if moment else "-"


def listing(jobs: Sequence[JobRecord], status: JobStatus, total: int) -> list[str]:
    if not jobs:
        return [f"No {status} jobs."]
    lines = [
        f"{job.id}  {job.workflow_type}  attempt {job.attempts}/{job.max_attempts}  "
        f"{_when(job)}  {one_line(job.error_message) or '-'}"
        for job in jobs
    ]
    shown = f"{len(jobs):,} of {total:,}" if total > len(jobs) else f"{len(jobs):,}"
    lines.append(f"{shown} {status} jobs; one with its traceback: make jobs ID=<id>")
    return lines


def details(job: JobRecord) -> list[str]:
    fields = {name: getattr(job, name) for name in job.__slots__ if name != "error_traceback"}
    width = max(map(len, fields))
    lines = [
        f"{name:<{width}}  {'-' if value is None else value}" for name, value in fields.items()
    ]
    lines.append("error_traceback:")
    lines.append(job.error_traceback.rstrip() if job.error_traceback else "  (none recorded)")
    return lines


async def list_jobs(status: JobStatus, workflow: str, ids: list[uuid.UUID]) -> list[str]:
    async with await Database.connect(application_name=APPLICATION) as db:
        queue = JobQueue(db)
        if ids:
            lines = []
            for key in ids:
                lines.extend(details(await queue.get(key)))
            return lines
        jobs = await queue.by_status(status, MAX_PAGE, workflow or None)
        total = (await queue.counts())[status] if not workflow else len(jobs)
        return listing(jobs, status, max(total, len(jobs)))


async def retry(ids: list[uuid.UUID], workflow: str) -> list[str]:
    async with await Database.connect(application_name=APPLICATION) as db:
        queue = JobQueue(db)
        if ids:
            requeued = set(await queue.retry(ids))
            lines = [f"{key}: queued again" for key in ids if key in requeued]
            left = [key for key in ids if key not in requeued]
            for key in left:
                job = await queue.get(key)
                lines.append(f"{key}: left as it is: it is {job.status}, not failed")
            return lines
        count = await queue.retry_workflow(workflow)
        return [f"{count:,} failed {workflow} jobs queued again"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="make jobs / make retry", description=__doc__)
    parser.add_argument("command", choices=["list", "retry"])
    parser.add_argument("--status", default="")
    parser.add_argument("--workflow", default="")
    parser.add_argument("--id", default="")
    args = parser.parse_args(argv)
    try:
        ids = job_ids(args.id) if args.id.strip() else []
        if args.command == "list":
            lines = asyncio.run(list_jobs(status_of(args.status), args.workflow, ids))
        else:
            if not ids and not args.workflow:
                raise Usage(
                    "make retry needs ID=<job id> (several: ID=<id>,<id>) or "
                    "WORKFLOW=<workflow type>: which failed jobs to put back"
                )
            if ids and args.workflow:
                raise Usage("make retry takes ID= or WORKFLOW=, not both")
            lines = asyncio.run(retry(ids, args.workflow))
    except Usage as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    except InvalidInput as error:  # the values the queue checks itself (WORKFLOW's length)
        name = {"workflow_type": "WORKFLOW"}.get(error.field, error.field)
        print(f"{name}= refused: {error.problem}", file=sys.stderr)
        return EXIT_USAGE
    except NotFound as error:
        print(error, file=sys.stderr)
        return 1
    except DatabaseUnavailable as error:
        print(error, file=sys.stderr)
        return EXIT_UNAVAILABLE
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

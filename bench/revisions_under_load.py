"""`make bench-upgrade`, second half: what `make revision` writes, applied to 1M jobs under load.

For each kind of schema change, in a throwaway copy of the project: the model of
processing_jobs (1M rows, 20 % queued) is edited, `make revision` writes the revision, and it
is applied (`alembic upgrade head`), then rolled back (`alembic downgrade -1`), while a writer
inserts a job and updates a media item in a loop, each its own transaction, timing every
write. The writer's worst latency per operation and direction is what n8n would feel; the goal
is under 1 s for every one. The revisions are used as written, unedited.
"""

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import URL

from bench.run import Size, scratch_database, seed_jobs
from bench.writer import JOB_INSERT, write_until
from media_db.pool import conninfo
from tests.helpers import edit, project_copy

GOAL_MS = 1000.0
WORKFLOW_TYPE = "    workflow_type: Mapped[str] = mapped_column(String(50))\n"
# processing_jobs' created_at (every row has one): the line after completed_at is unique to it.
CREATED_AT = (
    "    completed_at: Mapped[datetime | None]\n"
    "    created_at: Mapped[datetime | None] = mapped_column(server_default=NOW)\n"
)
STARTED_AT = "    started_at: Mapped[datetime | None]\n"
JOB_STATUS_CHECK = '        CheckConstraint(one_of(JobStatus), name="status"),\n'
IMPORTS = (
    "from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text\n"
)


def added(line: str) -> tuple[str, str]:
    """Add a line to the processing_jobs table args."""
    return JOB_STATUS_CHECK, f"{JOB_STATUS_CHECK}{line}\n"


# Each kind: its model edits on processing_jobs.
OPERATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "add nullable column": (
        (STARTED_AT, STARTED_AT + "    note: Mapped[str | None] = mapped_column(Text)\n"),
    ),
    # A column the models do not have (0010 added `attempts`: adding it again wrote nothing).
    "add NOT NULL column, constant default": (
        (
            STARTED_AT,
            STARTED_AT + '    weight: Mapped[int] = mapped_column(server_default=text("0"))\n',
        ),
    ),
    "create index": (
        added('        Index("idx_processing_jobs_workflow_type", "workflow_type"),'),
    ),
    "drop index": (('        Index("idx_processing_jobs_status", "status"),\n', ""),),
    "unique constraint": (
        (IMPORTS, IMPORTS.replace("Text, text", "Text, UniqueConstraint, text")),
        added('        UniqueConstraint("media_item_id", "created_at"),'),
    ),
    "check constraint": (
        added('        CheckConstraint("priority <= 100", name="max_priority"),'),
    ),
    "foreign key on a new column": (
        (
            WORKFLOW_TYPE,
            "    analysis_result_id: Mapped[uuid.UUID | None] = "
            'mapped_column(ForeignKey("analysis_results.id"))\n' + WORKFLOW_TYPE,
        ),
    ),
    "set NOT NULL": (
        (
            CREATED_AT,
            CREATED_AT.replace(
                "created_at: Mapped[datetime | None]", "created_at: Mapped[datetime]"
            ),
        ),
    ),
    "widen varchar": ((WORKFLOW_TYPE, WORKFLOW_TYPE.replace("50", "100")),),
    "drop column": ((STARTED_AT, ""),),
    "storage parameters": (
        ('"autovacuum_vacuum_threshold": 1000', '"autovacuum_vacuum_threshold": 2000'),
    ),
}


@dataclass(frozen=True)
class Stall:
    seconds: float
    writes: int
    writer_max_ms: float
    writer_p99_ms: float
    goal_met: bool


def project_env(project: Path, url: URL) -> dict[str, str]:
    """A project copy's own tools, on `url`."""
    return {
        "PATH": f"{project / '.venv' / 'bin'}:/usr/bin:/bin",
        "DATABASE_URL": url.render_as_string(hide_password=False),
    }


def make_revision(project: Path, url: URL, message: str) -> None:
    made = subprocess.run(
        ["make", "revision", f"M={message}"],
        cwd=project,
        env=project_env(project, url),
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        # Alembic prints its FAILED line on stdout.
        output = (made.stdout + made.stderr)[-2000:]
        raise RuntimeError(f"make revision ({message}) failed:\n{output}")


async def under_load(
    url: URL,
    command: list[str],
    project: Path,
    insert: str = JOB_INSERT,
    goal_ms: float = GOAL_MS,
) -> Stall:
    """`command` run while a writer inserts a job (`insert`) and updates a media item; the goal
    is met when no write waited `goal_ms` or longer."""
    latencies: list[float] = []
    stop = asyncio.Event()
    writer = asyncio.create_task(write_until(url, stop, latencies, insert))
    await asyncio.sleep(0.2)  # the writer is running before the DDL starts
    env = project_env(project, url)
    started = time.perf_counter()
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=project, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    stop.set()
    await writer
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    worst = max(latencies) * 1000
    return Stall(
        seconds=round(seconds, 2),
        writes=len(latencies),
        writer_max_ms=round(worst, 1),
        writer_p99_ms=round(statistics.quantiles(latencies, n=100)[98] * 1000, 1),
        goal_met=worst < goal_ms,
    )


async def prove(server: URL, size: Size, results: Path) -> Path:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-revisions-") as workdir:
        async with scratch_database(server) as url:
            async with await psycopg.AsyncConnection.connect(conninfo(url)) as raw:
                await seed_jobs(raw, size)  # type: ignore[arg-type]
            for kind, edits in OPERATIONS.items():
                home = Path(workdir) / kind.replace(" ", "_")
                home.mkdir()
                project = project_copy(home)
                edit(project / "models" / "media.py", *edits)
                make_revision(project, url, kind)
                up = await under_load(url, ["alembic", "upgrade", "head"], project)
                # The downgrade drops what the upgrade added, values included: consented.
                down = await under_load(
                    url, ["alembic", "-x", "allow-data-loss=true", "downgrade", "-1"], project
                )
                rows.append({"operation": kind, "upgrade": asdict(up), "downgrade": asdict(down)})
                print(table_row(kind, up, down), flush=True)
                shutil.rmtree(project)
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": asdict(size),
        "goal_writer_max_ms": GOAL_MS,
        "operations": rows,
    }
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"revisions-under-load-{size.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {path}")
    return path


def table_row(kind: str, up: Stall, down: Stall) -> str:
    def cell(stall: Stall) -> str:
        verdict = "met" if stall.goal_met else "NOT met"
        return f"{stall.seconds:6.2f} s, writer max {stall.writer_max_ms:7.1f} ms ({verdict})"

    return f"{kind:<40} upgrade {cell(up)} | downgrade {cell(down)}"

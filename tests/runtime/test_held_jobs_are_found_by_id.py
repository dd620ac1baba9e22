"""Every statement that writes a job it names by id (a lease extended, an outcome written, a job
handed back, snoozed or moved by hand) finds it by primary key, however many jobs are running. With
statistics from before a burst (few running), the planner took idx_processing_jobs_status for
their `status = 'running'` test and walked every running job for each id: 17 ms a completion
with 14,000 running, in the worker's every round."""

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import URL, create_engine, pool, text

from media_db.repositories import jobs
from tests.helpers import analyzed_plan

RUNNING_JOBS = 20_000
# One job found by primary key and rewritten touches 23-34 pages (heap, each index); walking
# the running jobs touched about 350 (measured at 20,000 with the index-answerable test).
MOST_BUFFERS = 80
ONE = uuid.UUID(int=1)  # the job named: its id and its lease token
HELD = {"ids": [ONE], "tokens": [ONE]}
STATEMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "extend": (jobs.EXTEND, {**HELD, "lease": jobs.DEFAULT_LEASE}),
    "complete held": (jobs.COMPLETE_HELD, HELD),
    "complete held and claim": (
        jobs.complete_and_claim_sql(10, False),
        {**HELD, "lease": jobs.DEFAULT_LEASE},
    ),
    "fail held": (
        jobs.FAIL_HELD,
        {**HELD, "errors": ["e"], "tracebacks": ["t"], "delays": [timedelta(seconds=1)]},
    ),
    "snooze held": (jobs.SNOOZE_HELD, {**HELD, "delays": [timedelta(seconds=1)]}),
    "release held": (jobs.RELEASE_HELD, HELD),
    "complete by id": (jobs.COMPLETE_MANY, {"ids": [ONE]}),
    "fail by id": (jobs.FAIL_MANY, {"ids": [ONE], "errors": ["e"]}),
    "release by id": (jobs.RELEASE, {"ids": [ONE]}),
    "move by hand": (
        jobs.MOVE,
        {"id": ONE, "to": "completed", "error": None, "allowed": ["running"]},
    ),
}
SEED_RUNNING = text("""
    INSERT INTO processing_jobs (id, workflow_type, status, lease_token, locked_until, attempts)
    SELECT CASE WHEN i = 1 THEN CAST(:one AS uuid) ELSE gen_random_uuid() END, 'transcode',
           'running', CASE WHEN i = 1 THEN CAST(:one AS uuid) ELSE gen_random_uuid() END,
           now() + interval '1 hour', 1
    FROM generate_series(1, :jobs) AS i
""")


def test_a_job_named_by_id_is_found_by_primary_key(migrated: URL) -> None:
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # Statistics taken while no job ran, as before a burst; then the burst.
        connection.execute(text("INSERT INTO processing_jobs (workflow_type) VALUES ('transcode')"))
        connection.execute(text("ANALYZE processing_jobs"))
        connection.execute(text("DELETE FROM processing_jobs"))
        connection.execute(SEED_RUNNING, {"one": ONE, "jobs": RUNNING_JOBS})

    touched = {}
    for name, (statement, params) in STATEMENTS.items():
        plan = analyzed_plan(migrated, statement, params)
        assert plan["Actual Rows"] >= 1, f"{name} wrote no job: the probe is not held as named"
        touched[name] = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]

    walked = {name: buffers for name, buffers in touched.items() if buffers > MOST_BUFFERS}
    assert not walked, f"buffers touched to write one job among {RUNNING_JOBS:,} running: {walked}"

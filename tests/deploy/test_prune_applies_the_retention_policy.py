"""`make prune` deletes finished jobs past their retention in batches, printing its progress,
keeps analysis results unless told otherwise, and refuses a malformed retention in one line;
`make status` shows the queue's health and flags leases no worker rescues."""

from sqlalchemy import URL, create_engine, pool, text

from tests.helpers import environment, job_counts, run

SEED = text("""
    INSERT INTO processing_jobs (workflow_type, status, completed_at)
    SELECT 'w', 'completed', now() - make_interval(days => d) FROM generate_series(1, 10) AS d
""")


def test_make_prune_deletes_finished_jobs_past_the_retention(migrated: URL) -> None:
    with create_engine(migrated, poolclass=pool.NullPool).begin() as connection:
        connection.execute(SEED)
        connection.execute(text("INSERT INTO processing_jobs (workflow_type) VALUES ('w')"))
    done = run(["make", "prune"], environment(migrated, MEDIA_DB_PRUNE_JOBS_AFTER="5d"))
    assert done.returncode == 0, done.stderr
    assert "processing_jobs: 6 finished rows older than 5d deleted" in done.stdout
    assert "rows deleted so far" in done.stdout
    assert "analysis_results: kept (no retention set)" in done.stdout
    assert job_counts(migrated) == {"completed": 4, "queued": 1}


def test_make_prune_refuses_a_malformed_retention_and_deletes_nothing(migrated: URL) -> None:
    with create_engine(migrated, poolclass=pool.NullPool).begin() as connection:
        connection.execute(SEED)
    for value, refusal in (
        ("\u0665d", "a duration above 0 (ms, s, min, h or d)"),  # an Arabic-Indic 5
        ("7", "a duration with its unit (ms, s, min, h or d), not a bare number (which unit?)"),
    ):
        done = run(
            ["python", "-m", "media_db.deploy.prune"],
            environment(migrated, MEDIA_DB_PRUNE_JOBS_AFTER=value),
        )
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"MEDIA_DB_PRUNE_JOBS_AFTER={value!r} refused: it must be {refusal}, e.g. 7d, or keep"
        ]
    assert job_counts(migrated) == {"completed": 10}


def test_status_shows_queue_health_and_flags_leases_nobody_rescues(migrated: URL) -> None:
    with create_engine(migrated, poolclass=pool.NullPool).begin() as connection:
        connection.execute(
            text("""
                INSERT INTO processing_jobs (workflow_type, status, locked_until, run_at)
                VALUES ('w', 'running', now() - interval '10 minutes', now()),
                       ('w', 'queued', NULL, now() - interval '90 seconds')
            """)
        )
    done = run(["python", "-m", "media_db.deploy.status"], environment(migrated))
    assert done.returncode == 1, done.stderr
    assert "! Queue: 1 queued, 1 running, 0 completed" in done.stdout
    assert "1 past their lease" in done.stdout
    assert "oldest due job waiting" in done.stdout
    assert "1 job past its lease with no worker rescuing it" in done.stdout

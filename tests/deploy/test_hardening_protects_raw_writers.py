"""After the hardening revisions, the database itself keeps raw-SQL writers (n8n) honest: bad
statuses, negative values and NULL statuses are refused, updated_at moves on every UPDATE."""

import time

import pytest
from sqlalchemy import URL, create_engine, pool, text
from sqlalchemy.exc import IntegrityError

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

MEDIA = "INSERT INTO media_items (source_url, source_type) VALUES ('u', 's3') RETURNING id"


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        (
            "INSERT INTO processing_jobs (workflow_type, status) VALUES ('t', 'done')",
            "processing_jobs_status_check",
        ),
        (
            "INSERT INTO analysis_results (analysis_type, provider, status) "
            "VALUES ('t', 'p', 'PENDING')",
            "analysis_results_status_check",
        ),
        (
            "INSERT INTO media_items (source_url, source_type, file_size) VALUES ('u', 's', -1)",
            "media_items_file_size_check",
        ),
        (
            "INSERT INTO media_items (source_url, source_type, duration_seconds) "
            "VALUES ('u', 's', -0.1)",
            "media_items_duration_seconds_check",
        ),
        (
            "INSERT INTO media_items (source_url, source_type, width) VALUES ('u', 's', 0)",
            "media_items_width_check",
        ),
        (
            "INSERT INTO media_items (source_url, source_type, height) VALUES ('u', 's', -2)",
            "media_items_height_check",
        ),
        (
            "INSERT INTO analysis_results (analysis_type, provider, token_usage) "
            "VALUES ('t', 'p', -1)",
            "analysis_results_token_usage_check",
        ),
        (
            "INSERT INTO analysis_results (analysis_type, provider, processing_time_ms) "
            "VALUES ('t', 'p', -1)",
            "analysis_results_processing_time_ms_check",
        ),
        (
            "INSERT INTO processing_jobs (workflow_type, status) VALUES ('t', NULL)",
            'null value in column "status"',
        ),
    ],
)
def test_bad_raw_write_is_refused_by_name(migrated: URL, statement: str, constraint: str) -> None:
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.connect() as connection, pytest.raises(IntegrityError, match=constraint):
        connection.execute(text(statement))


def test_raw_update_moves_updated_at(migrated: URL) -> None:
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.begin() as connection:
        media_id = connection.scalar(text(MEDIA))
    time.sleep(0.01)  # now() is the transaction's start: make the two transactions differ
    with engine.begin() as connection:
        created, updated = connection.execute(
            text(
                "UPDATE media_items SET local_path = '/x' WHERE id = :id "
                "RETURNING created_at, updated_at"
            ),
            {"id": media_id},
        ).one()
    assert updated > created
    with engine.begin() as connection:  # even a writer that sets it explicitly gets now()
        forced = connection.scalar(
            text(
                "UPDATE media_items SET updated_at = '2000-01-01' WHERE id = :id "
                "RETURNING updated_at"
            ),
            {"id": media_id},
        )
    assert forced > updated

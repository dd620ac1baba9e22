"""Data written under revision 0001 (the plan's schema, by raw SQL) survives the hardening:
NULL statuses become the defaults, every row is kept; a row that breaks a new rule stops the
upgrade at the revision before validation, with the constraint named and nothing lost."""

import pytest
from alembic import command
from alembic.util import CommandError
from sqlalchemy import Engine, text

from media_db.deploy.project import VERSION_TABLE
from tests.helpers import alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

SEED_AT_0001 = """
INSERT INTO media_items (id, source_url, source_type, file_size)
    VALUES ('00000000-0000-0000-0000-000000000001', 'u', 's3', 10);
INSERT INTO processing_jobs (workflow_type, status, media_item_id) VALUES
    ('transcode', NULL, '00000000-0000-0000-0000-000000000001'),
    ('transcode', 'running', '00000000-0000-0000-0000-000000000001');
INSERT INTO analysis_results (analysis_type, provider, status) VALUES ('t', 'p', NULL);
"""


def statuses(engine: Engine, table: str) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.scalars(text(f"SELECT status FROM {table}")).all())


def test_null_statuses_become_defaults_and_rows_are_kept(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.exec_driver_sql(SEED_AT_0001)
        connection.commit()
        command.upgrade(alembic_config(connection), "head")
    assert statuses(engine, "processing_jobs") == ["queued", "running"]
    assert statuses(engine, "analysis_results") == ["pending"]


def test_a_row_breaking_a_new_rule_stops_before_validation(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.exec_driver_sql(SEED_AT_0001)
        connection.exec_driver_sql(
            "INSERT INTO media_items (source_url, source_type, width) VALUES ('bad', 's3', 0)"
        )
        connection.commit()
        with pytest.raises(CommandError, match="media_items_width_check"):
            command.upgrade(alembic_config(connection), "head")
        connection.rollback()
        version = connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}"))
        rows = connection.scalar(text("SELECT count(*) FROM media_items"))
    assert version == "0003"  # 0004 (validation) rolled back whole
    assert rows == 2

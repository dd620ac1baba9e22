"""The database is shared with n8n: its tables (including one named `alembic_version`) survive
upgrade, downgrade and autogenerate untouched, and `alembic check` passes beside them."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, text

from media_db import catalog
from models import Base
from tests.helpers import alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

N8N_LIKE_SCHEMA = """
CREATE TABLE "user" (id uuid PRIMARY KEY, email varchar(255) UNIQUE);
CREATE TABLE settings (key varchar(255) PRIMARY KEY, value text NOT NULL);
CREATE TABLE workflow_entity (id varchar(36) PRIMARY KEY, name varchar(128) NOT NULL,
                              active boolean NOT NULL DEFAULT false);
CREATE TABLE execution_entity (id serial PRIMARY KEY,
    "workflowId" varchar(36) REFERENCES workflow_entity(id) ON DELETE CASCADE,
    status varchar NOT NULL DEFAULT 'new');
CREATE INDEX idx_execution_workflow ON execution_entity("workflowId");
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO "user" VALUES ('7a1f6b5e-2d7c-4a0b-9c1e-000000000001', 'ops@example.com');
INSERT INTO settings VALUES ('userManagement.isInstanceOwnerSetUp', 'true');
INSERT INTO workflow_entity VALUES ('wf1', 'Analyse uploads', true);
INSERT INTO execution_entity ("workflowId", status) VALUES ('wf1', 'success');
INSERT INTO alembic_version VALUES ('someone_elses_head');
"""
FOREIGN = {"user", "settings", "workflow_entity", "execution_entity", "alembic_version"}


def foreign_state(connection: Connection) -> tuple[dict[str, catalog.Table], dict[str, list[str]]]:
    shapes = {
        name: table for name, table in catalog.snapshot(connection).items() if name in FOREIGN
    }
    rows = {
        name: [str(row) for row in connection.execute(text(f'SELECT * FROM "{name}"'))]
        for name in sorted(FOREIGN)
    }
    return shapes, rows


def test_upgrade_downgrade_and_autogenerate_leave_foreign_tables_alone(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(N8N_LIKE_SCHEMA)
    with engine.connect() as connection:
        before = foreign_state(connection)
        config = alembic_config(connection)

        command.upgrade(config, "head")
        assert foreign_state(connection) == before

        command.check(config)  # raises if autogenerate would propose anything at all
        scoped = MigrationContext.configure(connection, opts=_env_options())
        assert compare_metadata(scoped, Base.metadata) == []

        command.downgrade(config, "base")
        assert foreign_state(connection) == before
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == (
            "someone_elses_head"
        )


def test_stock_autogenerate_would_drop_them(engine: Engine) -> None:
    """The control: without our scoping, autogenerate proposes dropping every foreign table."""
    with engine.begin() as connection:
        connection.exec_driver_sql(N8N_LIKE_SCHEMA)
    with engine.connect() as connection:
        stock = MigrationContext.configure(connection)
        dropped = {
            diff[1].name
            for diff in compare_metadata(stock, Base.metadata)
            if isinstance(diff, tuple) and diff[0] == "remove_table"
        }
    # It spares `alembic_version` only because it takes it for its own version table: stock
    # Alembic would have read and overwritten n8n's row there. Hence our own version table name.
    assert dropped == FOREIGN - {"alembic_version"}


def _env_options() -> dict[str, object]:
    from media_db.migrations import VERSION_TABLE, scoped_to

    options = scoped_to(Base.metadata)
    options.pop("process_revision_directives")
    return {**options, "version_table": VERSION_TABLE}

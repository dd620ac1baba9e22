"""The database is shared with n8n: its tables (including one named `alembic_version`), functions
and triggers survive upgrade, downgrade and autogenerate untouched, and `alembic check` passes
beside them."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic_utils.replaceable_entity import ReplaceableEntity
from sqlalchemy import Connection, Engine, text

from media_db.deploy import catalog
from media_db.models import Base
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
CREATE FUNCTION workflow_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.name := trim(NEW.name); RETURN NEW; END $$;
CREATE TRIGGER workflow_touch BEFORE UPDATE ON workflow_entity
    FOR EACH ROW EXECUTE FUNCTION workflow_touch();
CREATE FUNCTION executions_of(wf varchar) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM execution_entity WHERE "workflowId" = wf $$;
"""
FOREIGN = {"user", "settings", "workflow_entity", "execution_entity", "alembic_version"}
FOREIGN_FUNCTIONS = {"workflow_touch()", "executions_of(wf character varying)"}


def foreign_state(
    connection: Connection,
) -> tuple[dict[str, catalog.Table], dict[str, list[str]], dict[str, str]]:
    """Their tables (triggers included), rows and functions."""
    shapes = {
        name: table for name, table in catalog.snapshot(connection).items() if name in FOREIGN
    }
    functions = {
        name: body
        for name, body in catalog.functions(connection, "public").items()
        if name in FOREIGN_FUNCTIONS
    }
    assert set(functions) == FOREIGN_FUNCTIONS
    rows = {
        name: [str(row) for row in connection.execute(text(f'SELECT * FROM "{name}"'))]
        for name in sorted(FOREIGN)
    }
    return shapes, rows, functions


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
        stock = MigrationContext.configure(
            connection,
            opts={
                # alembic_utils' comparator, installed on import, needs include_schemas, and
                # compares the entities of its process-wide registry: tables only here.
                "include_schemas": False,
                "include_object": lambda obj, *_: not isinstance(obj, ReplaceableEntity),
            },
        )
        dropped = {
            diff[1].name
            for diff in compare_metadata(stock, Base.metadata)
            if isinstance(diff, tuple) and diff[0] == "remove_table"
        }
    # It spares `alembic_version` only because it takes it for its own version table: stock
    # Alembic would have read and overwritten n8n's row there. Hence our own version table name.
    assert dropped == FOREIGN - {"alembic_version"}


def test_without_our_filter_alembic_utils_would_drop_their_functions_and_triggers(
    engine: Engine,
) -> None:
    """The control: our include_object is what keeps n8n's functions and triggers invisible."""
    with engine.begin() as connection:
        connection.exec_driver_sql(N8N_LIKE_SCHEMA)
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        unfiltered = {**_env_options(), "include_object": None}
        proposed = compare_metadata(
            MigrationContext.configure(connection, opts=unfiltered), Base.metadata
        )
    assert sorted(proposed) == [
        ("drop_entity", "PGFunction: public.executions_of(wf character varying)"),
        ("drop_entity", "PGFunction: public.workflow_touch()"),
        ("drop_entity", "PGTrigger: public.workflow_touch False public.workflow_entity"),
    ]


def _env_options() -> dict[str, object]:
    from media_db.deploy.environment import scoped_to
    from media_db.deploy.project import VERSION_TABLE
    from media_db.models import ENTITIES, SCHEMA

    options = scoped_to(Base.metadata, ENTITIES, SCHEMA, with_entities=True)
    options.pop("process_revision_directives")
    return {**options, "version_table": VERSION_TABLE}

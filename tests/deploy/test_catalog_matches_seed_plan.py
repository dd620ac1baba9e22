"""Revision 0001 builds exactly the seed plan's schema: the plan's SQL applied as-is to one
database and `upgrade 0001` to another give the same catalog, object by object, name by name.
(Later revisions harden that schema on purpose; 0001 is the plan.)"""

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, pool

from media_db.deploy import catalog
from media_db.deploy.project import VERSION_TABLE
from tests.conftest import FreshDatabase
from tests.helpers import alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

PLAN_SQL = (Path(__file__).parents[1] / "sql" / "seed_plan_001_initial_schema.sql").read_text()


def test_revision_0001_gives_the_catalog_of_the_plans_sql(fresh_database: FreshDatabase) -> None:
    plan_engine = create_engine(fresh_database(), poolclass=pool.NullPool)
    ours_engine = create_engine(fresh_database(), poolclass=pool.NullPool)
    with plan_engine.begin() as connection:
        connection.exec_driver_sql(PLAN_SQL)
    with ours_engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0001")

    with plan_engine.connect() as connection:
        plan = catalog.snapshot(connection)
    with ours_engine.connect() as connection:
        ours = catalog.snapshot(connection)

    assert set(ours) - set(plan) == {VERSION_TABLE}
    assert catalog.differences(plan, ours, set(plan)) == []
    assert {name: t.column_order for name, t in ours.items() if name in plan} == {
        name: t.column_order for name, t in plan.items()
    }
    # The comparison has teeth: the plan's names really are there, as the plan's SQL made them.
    assert plan["analysis_results"].constraints["analysis_results_media_item_id_fkey"] == (
        "FOREIGN KEY (media_item_id) REFERENCES media_items(id) ON DELETE CASCADE"
    )
    assert "(created_at DESC)" in plan["media_items"].indexes["idx_media_items_created_at"]
    assert str(plan["media_items"].columns["duration_seconds"]) == "double precision NULL"

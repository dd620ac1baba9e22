"""Every tested major builds the same schema at head: the migrated catalog, normalised in one
place for what majors print differently (tests/majors.py), equals what the models build on
that same server. (Compared with the models, not a pinned file: a revision added through the
documented steps (docs/schema-changes.md) needs no reference rewritten.)"""

import pytest
from sqlalchemy import URL, create_engine, pool

from media_db.deploy import catalog
from media_db.deploy.check import major_of
from tests.majors import head_catalog, models_catalog, not_null_constraints
from tests.servers import DatabaseServer

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix


def test_head_catalog_is_what_the_models_build(migrated: URL, server: DatabaseServer) -> None:
    major = major_of(server.version())
    with create_engine(migrated, poolclass=pool.NullPool).connect() as connection:
        found = head_catalog(connection, major)
        expected = models_catalog(connection, major)
    assert found == expected


def test_normalisation_removes_only_restated_not_nulls(
    migrated: URL, server: DatabaseServer
) -> None:
    major = major_of(server.version())
    with create_engine(migrated, poolclass=pool.NullPool).connect() as connection:
        snapshot = catalog.snapshot(connection)
    not_null_columns = {
        f"{name}_{column}_not_null"
        for name, table in snapshot.items()
        for column, shape in table.columns.items()
        if shape.not_null
    }
    restating = {
        constraint
        for table in snapshot.values()
        for constraint, definition in table.constraints.items()
        if definition.startswith("NOT NULL ")
    }
    # 18: one such constraint per NOT NULL column; 13 to 17: none. Normalisation removes
    # exactly those.
    expected = not_null_columns if major >= 18 else set()
    assert restating == expected
    assert set().union(*not_null_constraints(snapshot, major).values()) == expected

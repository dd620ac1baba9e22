"""A contract's way down (the old column back, its trigger, its backfill, its index built again,
each in a transaction of its own) cut after any of its commits finishes when run again: the
schema is the expand's again and every value is there, in both columns."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import URL, create_engine, pool, text

from media_db.deploy import catalog
from tests import model_edits
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    LONG,
    NARROWED,
    PROBE_TYPE,
    ok,
    probe_project,
)
from tests.conftest import FreshDatabase
from tests.deploy.test_dropped_data_is_never_lost_unasked import config_for
from tests.helpers import edit

VALUES = "SELECT id, probe_type, probe_type__old FROM media_items ORDER BY id"


class Cut(Exception):
    """The run stopped here, as a lost connection or a killed deploy stops it."""


@contextmanager
def cut_at(boundary: int) -> Iterator[list[int]]:
    """Alembic's autocommit blocks, each entered (what came before committed) and left (its
    own steps committed): the run raises Cut at the `boundary`-th of those points. Yields the
    count of points reached."""
    passed = [0]
    original = MigrationContext.autocommit_block

    def point() -> None:
        passed[0] += 1
        if passed[0] == boundary:
            raise Cut(boundary)

    @contextmanager
    def counted(self: MigrationContext) -> Iterator[None]:
        with original(self):
            point()
            yield
        point()

    with mock.patch.object(MigrationContext, "autocommit_block", counted):
        yield passed


def values(url: URL) -> list[tuple[object, ...]]:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return [tuple(row) for row in connection.execute(text(VALUES))]


def cut_down(project: Path, url: URL, boundary: int) -> bool:
    """The way down, cut at its `boundary`-th point: whether it was (else it had fewer, and
    finished)."""
    with cut_at(boundary) as passed:
        try:
            downgrade(project, url)
        except CommandError as failed:  # the deploy's one-line report of the cut
            if f"Cut: {boundary};" not in str(failed):
                raise
    return passed[0] >= boundary


def downgrade(project: Path, url: URL) -> None:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.downgrade(config_for(project, connection), "-1")


@pytest.mark.matrix
def test_a_contracts_way_down_cut_after_any_commit_finishes_when_run_again(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        PROBE_TYPE,
        "ALTER TABLE media_items ADD COLUMN probe_type varchar(100); "
        "CREATE INDEX probe_type_idx ON media_items (probe_type)",
    )
    model_edits.add_table_arg(models, "MediaItem", 'Index("probe_type_idx", "probe_type")')
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO media_items (source_url, source_type, probe_type) "
                "SELECT 's' || g, 'seed', CASE WHEN g % 7 = 0 THEN NULL ELSE 'video/' || g END "
                "FROM generate_series(1, 300) g"
            )
        )
        connection.execute(
            text(f"UPDATE media_items SET probe_type = '{LONG}' WHERE source_url = 's1'")
        )
    edit(models, (PROBE_TYPE, NARROWED))
    ok(["make", "revision", "M=narrow probe_type"], env, project)
    ok(["alembic", "upgrade", "head"], env, project)
    expanded, held = snapshot(url), values(url)
    edit(models, (NARROWED, PROBE_TYPE.replace("100", "50")))
    ok(["make", "revision", "M=contract probe_type"], env, project)
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        # The long value, which only the old column held, is given up for the contract.
        connection.execute(
            text("UPDATE media_items SET probe_type__old = probe_type WHERE source_url = 's1'")
        )
    held = values(url)
    ok(["alembic", "upgrade", "head"], env, project)

    boundary = 1
    while cut_down(project, url, boundary):
        downgrade(project, url)  # run again, to its end
        assert catalog.differences(expanded, snapshot(url), set(expanded)) == [], boundary
        assert values(url) == held, f"cut at point {boundary}: values changed"
        ok(["alembic", "upgrade", "head"], env, project)
        boundary += 1
    # The last run had no such point, and finished uncut.
    assert boundary > 4, "the way down commits in several steps; the cuts must reach them"
    assert catalog.differences(expanded, snapshot(url), set(expanded)) == []
    assert values(url) == held
    ok(["alembic", "upgrade", "head"], env, project)
    ok(["make", "verify"], env, project)

"""An existing nullable column made NOT NULL with a `backfill` marker is written as an expand:
the sync trigger fills what a writer leaves NULL (n8n's old inserts keep working through the
upgrade), the rows are filled in batches, then NOT NULL through the validated CHECK. Without the
marker the plain SET NOT NULL fails on the first NULL and leaves a NOT VALID CHECK behind.

The column is the test's own (`probe_rank`).
"""

from pathlib import Path

from sqlalchemy import URL

from tests import model_edits
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    CONTRACT_REVISION,
    assert_no_drift,
    catalog_is,
    down_to,
    execute,
    migrate,
    ok,
    revision_text,
    scalar,
    writing,
)
from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, edit, environment, project_copy

RANK = "probe_rank: Mapped[int | None]"
MARKED = 'probe_rank: Mapped[int] = mapped_column(info={"backfill": "0"})'
CONTRACTED = "probe_rank: Mapped[int]"
NULLS = "SELECT count(*) FROM media_items WHERE probe_rank IS NULL"


def not_null(url: URL) -> bool:
    return bool(
        scalar(
            url,
            "SELECT attnotnull FROM pg_attribute "
            "WHERE attrelid = 'media_items'::regclass AND attname = 'probe_rank'",
        )
    )


def test_existing_column_is_filled_then_not_null_while_old_inserts_continue(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    model_edits.existing_column(
        models, url, "MediaItem", RANK, "ALTER TABLE media_items ADD COLUMN probe_rank integer"
    )
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_rank) SELECT 's' || g, 'seed', "
        "CASE WHEN g % 3 = 0 THEN NULL ELSE g END FROM generate_series(1, 12000) g",
    )
    before = snapshot(url)
    edit(models, (RANK, MARKED))

    ok(["make", "revision", "M=probe_rank not null"], env, project)
    expand = revision_text(project, NEXT_REVISION)
    assert "CREATE TRIGGER media_items_probe_rank_sync" in expand
    assert "VALIDATE CONSTRAINT media_items_probe_rank_not_null_check" in expand

    def old_inserts(n: int) -> list[tuple[str, dict[str, object]]]:
        # n8n's raw SQL, which has never heard of probe_rank.
        return [
            (
                "INSERT INTO media_items (source_url, source_type) VALUES ('w', %(n)s)",
                {"n": f"writer {n}"},
            )
        ]

    with writing(url, old_inserts):
        migrate(project, url, "upgrade", "head")
    assert scalar(url, NULLS) == 0
    assert not_null(url)
    assert scalar(url, "SELECT count(*) FROM media_items WHERE probe_rank = 0") >= 4000
    verified = ok(["make", "verify"], env, project)
    assert_no_drift(verified)
    assert "backfill media_items.probe_rank from (0)" in verified
    expanded = snapshot(url)

    migrate(project, url, "downgrade", "-1")  # NOT NULL and the trigger go; the values stay
    catalog_is(url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, (MARKED, CONTRACTED))
    ok(["make", "revision", "M=contract probe_rank"], env, project)
    assert "DROP TRIGGER IF EXISTS media_items_probe_rank_sync" in revision_text(
        project, CONTRACT_REVISION
    )
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    down_to(project, url, expanded)

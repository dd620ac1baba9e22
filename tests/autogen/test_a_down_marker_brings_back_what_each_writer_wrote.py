"""text -> jsonb with `using: to_jsonb(...)` and `down: ... #>> '{}'`: after the cutover the sync
trigger fills the kept text column from each new-shape write with `down`, so a rollback gives
back `late`, not the cast's `"late"`, and the contract's guard finds nothing lost. Without
`down` the change is refused (tests/autogen/test_autogenerate_writes_lock_safe_revisions.py).

The column is the test's own (`probe_note`).
"""

from pathlib import Path

from tests import model_edits
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    assert_no_drift,
    catalog_is,
    execute,
    migrate,
    ok,
    scalar,
    writing,
)
from tests.conftest import FreshDatabase
from tests.helpers import edit, environment, project_copy

NOTE = "probe_note: Mapped[str | None] = mapped_column(Text)"
AS_JSON = (
    "probe_note: Mapped[dict[str, Any] | None] = mapped_column(info={"
    '"using": "to_jsonb(probe_note)", "down": "probe_note #>> \'{}\'"})'
)
CONTRACTED = "probe_note: Mapped[dict[str, Any] | None]"
QUOTED = "SELECT count(*) FROM media_items WHERE probe_note LIKE '\"%%'"


def test_rollback_and_contract_keep_each_writers_text(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    model_edits.existing_column(
        models, url, "MediaItem", NOTE, "ALTER TABLE media_items ADD COLUMN probe_note text"
    )
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_note) "
        "SELECT 's' || g, 'seed', 'timeout ' || g FROM generate_series(1, 3000) g",
    )
    before = snapshot(url)
    edit(models, (NOTE, AS_JSON))
    ok(["make", "revision", "M=probe_note as jsonb"], env, project)
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))

    def new_shape(n: int) -> list[tuple[str, dict[str, object]]]:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, probe_note) "
                "VALUES ('w', 'writer', to_jsonb(%(note)s::text))",
                {"note": f"late {n}"},
            )
        ]

    with writing(url, new_shape) as (writer,):
        pass
    assert writer.written >= 20
    assert scalar(url, "SELECT count(*) FROM media_items WHERE probe_note__old LIKE 'late %%'") == (
        writer.written
    )

    migrate(project, url, "downgrade", "-1")  # the guard passes: nothing the text column lacks
    catalog_is(url, before)
    assert scalar(url, QUOTED) == 0  # `late 3`, never `"late 3"`
    assert scalar(url, "SELECT count(*) FROM media_items WHERE probe_note LIKE 'late %%'") == (
        writer.written
    )

    migrate(project, url, "upgrade", "head")
    edit(models, (AS_JSON, CONTRACTED))
    ok(["make", "revision", "M=contract probe_note"], env, project)
    migrate(project, url, "upgrade", "head")  # the contract's guard finds nothing lost
    assert_no_drift(ok(["make", "verify"], env, project))
    assert scalar(url, "SELECT count(*) FROM media_items WHERE probe_note = '\"late 3\"'") == 1

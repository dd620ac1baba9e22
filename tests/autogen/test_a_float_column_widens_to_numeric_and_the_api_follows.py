"""A float column (double precision, with its CHECK) widened to NUMERIC: the only widening a
float column has. `make revision` writes the expand; at the expand and after the
contract the API takes and gives back a Decimal, refuses NaN and what the CHECK refuses, and a
raw writer of the old shape keeps working; each way down gives back the catalog it came from.
A model that keeps saying `float` for the NUMERIC column is refused in one line: its records
would say float and hold a Decimal.

The column is the test's own (`probe_seconds`), with its CHECK, written through `NewMedia`.
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
    probe_project,
    scalar,
)
from tests.conftest import FreshDatabase
from tests.helpers import api_works, edit, run

DECLARED = "probe_seconds: Mapped[float | None]"
WIDENED = (
    "probe_seconds: Mapped[Decimal | None] = mapped_column(Numeric, info={"
    '"using": "probe_seconds::numeric", "down": "probe_seconds::double precision"})'
)
CONTRACTED = "probe_seconds: Mapped[Decimal | None] = mapped_column(Numeric)"
STILL_FLOAT = WIDENED.replace("Mapped[Decimal | None]", "Mapped[float | None]")
API = """
        from decimal import Decimal
        media = MediaRepository(db)
        item = await media.create(NewMedia("s3://n", "upload", probe_seconds=Decimal("12.125")))
        assert item.probe_seconds == Decimal("12.125"), item
        assert (await media.get(item.id)).probe_seconds == Decimal("12.125")
        for bad in (Decimal("NaN"), Decimal("-1"), "12"):
            try:
                await media.create(NewMedia("s3://n", "upload", probe_seconds=bad))
            except InvalidInput as refused:
                assert "probe_seconds" in str(refused), refused
            else:
                raise AssertionError(f"{bad!r} was written")
"""
OLD_WRITER = (
    "INSERT INTO media_items (source_url, source_type, probe_seconds) VALUES ('raw', 'raw', 0.1)"
)


def test_a_float_column_widens_to_numeric_and_the_api_follows(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        DECLARED,
        "ALTER TABLE media_items ADD COLUMN probe_seconds double precision, ADD CONSTRAINT "
        "media_items_probe_seconds_check CHECK (probe_seconds >= 0)",
    )
    model_edits.add_table_arg(
        models, "MediaItem", 'CheckConstraint("probe_seconds >= 0", name="probe_seconds")'
    )
    execute(url, OLD_WRITER)
    before = snapshot(url)

    edit(models, (DECLARED, STILL_FLOAT))
    refused = run(["make", "revision", "M=widen probe_seconds"], env, cwd=project)
    said = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode != 0
    assert "media_items.probe_seconds: its type NUMERIC is read back as a Decimal" in said
    assert "annotate it Mapped[Decimal | None]" in said

    edit(models, (STILL_FLOAT, WIDENED))
    ok(["make", "revision", "M=widen probe_seconds"], env, project)
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    execute(url, OLD_WRITER)
    api_works(project, url, API)
    assert scalar(url, "SELECT count(*) FROM media_items WHERE probe_seconds = 0.1") == 2

    migrate(project, url, "downgrade", "-1")  # nothing lost: the old column kept every value
    catalog_is(url, before)
    migrate(project, url, "upgrade", "head")
    expanded = snapshot(url)

    edit(models, (WIDENED, CONTRACTED))
    ok(["make", "revision", "M=contract probe_seconds"], env, project)
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    api_works(project, url, API)
    migrate(project, url, "downgrade", "-1")
    catalog_is(url, expanded)

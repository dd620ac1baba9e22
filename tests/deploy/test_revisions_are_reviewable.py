"""Every revision is reviewable and stays runnable as the code moves on: a docstring saying why
and how it treats locks, no import of application code, one head, sequential ids, every table
and column either direction drops declared for the data-loss guard, and docs/deploy.md naming
exactly the revisions that are not atomic."""

import ast
import re
from pathlib import Path

import pytest
from alembic.script import Script, ScriptDirectory

from media_db.autogen.locks import GENERATED
from media_db.deploy.data_loss import DECLARED_DROPS, LOSSLESS_DROPS
from media_db.deploy.failures import commits_as_it_goes
from tests.helpers import OUR_REVISIONS, REPO_ROOT, alembic_config

SCRIPTS = list(reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions())))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.revision)
def test_revision_says_why_and_how_it_locks(script: Script) -> None:
    doc = script.module.__doc__ or ""
    assert "Why:" in doc, "the docstring says why the change is made"
    assert "Locks:" in doc, "the docstring says what locks it takes and for how long"
    assert "<what this changes" not in doc, "fill in the template's Why:"
    assert "<for a populated table" not in doc, "fill in the template's Locks:"
    assert re.fullmatch(r"\d{4}", script.revision)
    assert re.fullmatch(
        rf"\d{{4}}_\d{{2}}_\d{{2}}_{script.revision}_\w+\.py", Path(script.path).name
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.revision)
def test_revision_imports_no_application_code(script: Script) -> None:
    tree = ast.parse(Path(script.path).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {name for name in imported if name.split(".")[0] in {"models", "media_db"}}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.revision)
@pytest.mark.parametrize("is_upgrade", [True, False], ids=["upgrade", "downgrade"])
def test_everything_dropped_is_declared(script: Script, is_upgrade: bool) -> None:
    """The data-loss guard checks what a revision declares before any step runs: every table
    and column the direction drops must be there (tables: `drops_tables`, columns:
    `drops_columns`, with an `upgrade_` prefix for what upgrade() drops)."""
    tree = ast.parse(Path(script.path).read_text())
    [function] = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and node.name == ("upgrade" if is_upgrade else "downgrade")
    ]
    dropped: set[str] = set()
    for call in ast.walk(function):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            continue
        args = [str(arg.value) for arg in call.args if isinstance(arg, ast.Constant)]
        if call.func.attr == "drop_table":
            dropped.add(args[0])
        elif call.func.attr == "drop_column":
            dropped.add(f"{args[0]}.{args[1]}")
    sql = ast.get_source_segment(Path(script.path).read_text(), function) or ""
    dropped |= {name.lower() for name in re.findall(r"DROP TABLE (?:IF EXISTS )?(\w+)", sql)}
    dropped |= {
        f"{table}.{column}".lower()
        for table, column in re.findall(r"ALTER TABLE (\w+) DROP COLUMN (?:IF EXISTS )?(\w+)", sql)
    }
    declared = {
        name
        for attribute in (*DECLARED_DROPS[is_upgrade], LOSSLESS_DROPS[is_upgrade])
        for name in getattr(script.module, attribute, ())
    }
    assert dropped <= declared, (
        f"declare {sorted(dropped - declared)} in {' / '.join(DECLARED_DROPS[is_upgrade])} so "
        "the data-loss guard checks them before any step runs"
    )


def test_readme_lists_exactly_the_revisions_that_commit_as_they_go() -> None:
    deploy = (REPO_ROOT / "docs" / "deploy.md").read_text()
    bullet = deploy[deploy.index("- **Atomic revisions") :]
    bullet = bullet[: bullet.index("\n- **")]
    listed = {
        (revision, direction)
        for revision, directions in re.findall(
            r"(\d{4}) \((upgrade and downgrade|upgrade|downgrade):", bullet
        )
        for direction in directions.split(" and ")
    }
    # Revisions written by `make revision` are re-runnable by construction, and their Locks:
    # lines name each step that commits on its own: the page covers them all in one sentence.
    in_code = {
        (script.revision, direction)
        for script in SCRIPTS
        if GENERATED not in (script.module.__doc__ or "")
        for direction in ("upgrade", "downgrade")
        if commits_as_it_goes(script.module, direction == "upgrade")
    }
    assert listed == in_code


def test_one_head_and_sequential_ids() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1
    assert [s.revision for s in SCRIPTS] == [f"{n:04d}" for n in range(1, len(SCRIPTS) + 1)]


def test_readme_documents_our_revisions_from_the_first_in_order() -> None:
    # The tests of our revisions target the newest one documented (tests/helpers.py OURS): a
    # revision of ours left out of the table would be taken for a user's.
    assert tuple(script.revision for script in SCRIPTS[: len(OUR_REVISIONS)]) == OUR_REVISIONS

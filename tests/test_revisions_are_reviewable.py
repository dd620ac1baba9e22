"""Every revision is reviewable and stays runnable as the code moves on: a docstring saying why
and how it treats locks, no import of application code, one head, sequential ids, every
table a downgrade drops declared for the data-loss guard, and the README naming exactly the
revisions that are not atomic."""

import ast
import re
from pathlib import Path

import pytest
from alembic.script import Script, ScriptDirectory

from media_db.failures import commits_as_it_goes
from tests.helpers import REPO_ROOT, alembic_config

SCRIPTS = list(reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions())))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.revision)
def test_revision_says_why_and_how_it_locks(script: Script) -> None:
    doc = script.module.__doc__ or ""
    assert "Why:" in doc, "the docstring says why the change is made"
    assert "Locks:" in doc, "the docstring says what locks it takes and for how long"
    assert "<what this changes" not in doc, "fill in the template's Why:"
    assert "<for a populated table" not in doc, "fill in the template's Locks:"
    assert re.fullmatch(r"\d{4}", script.revision)
    assert script.path.endswith(f"_{script.revision}_{script.path.split('_', 4)[-1]}")


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
def test_tables_dropped_on_downgrade_are_declared(script: Script) -> None:
    source = Path(script.path).read_text()
    downgrade = source[source.index("def downgrade") :]
    dropped = set(re.findall(r'op\.drop_table\("(\w+)"', downgrade))
    dropped |= {name.lower() for name in re.findall(r"DROP TABLE (?:IF EXISTS )?(\w+)", downgrade)}
    assert dropped <= set(getattr(script.module, "drops_tables", ())), (
        "declare `drops_tables` so the data-loss guard counts their rows first"
    )


def test_readme_lists_exactly_the_revisions_that_commit_as_they_go() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    bullet = readme[readme.index("- **Atomic revisions") :]
    bullet = bullet[: bullet.index("\n- **")]
    listed = {
        (revision, direction)
        for revision, directions in re.findall(
            r"(\d{4}) \((upgrade and downgrade|upgrade|downgrade):", bullet
        )
        for direction in directions.split(" and ")
    }
    in_code = {
        (script.revision, direction)
        for script in SCRIPTS
        for direction in ("upgrade", "downgrade")
        if commits_as_it_goes(script.module, direction == "upgrade")
    }
    assert listed == in_code


def test_one_head_and_sequential_ids() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1
    assert [s.revision for s in SCRIPTS] == [f"{n:04d}" for n in range(1, len(SCRIPTS) + 1)]

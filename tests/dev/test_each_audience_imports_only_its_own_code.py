"""The folder tells who runs the code, and imports follow it: the API's modules (`media_db/`)
never import deploy, `make revision` or developer code; deploy code never imports developer
code, nor `make revision`'s (media_db/autogen/) at import time; `alembic upgrade head` loads
neither. The old
entry points (`python -m media_db.status`, `media_db.backup`, `media_db.local_server`) keep
working as shims."""

import ast
from pathlib import Path

import pytest
from sqlalchemy import URL

from tests.conftest import FreshDatabase
from tests.helpers import REPO_ROOT, environment, run

PACKAGE = REPO_ROOT / "media_db"
SHIMS = {"status.py", "backup.py", "local_server.py"}
# What each folder must not import at module level.
FORBIDDEN = {
    "runtime": ("media_db.deploy", "media_db.autogen", "media_db.dev"),
    "deploy": ("media_db.dev", "media_db.autogen"),
    "autogen": ("media_db.dev",),
}


def module_level_imports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def files_of(audience: str) -> list[Path]:
    if audience == "runtime":
        top = [path for path in PACKAGE.glob("*.py") if path.name not in SHIMS]
        return top + sorted((PACKAGE / "repositories").glob("*.py"))
    return sorted((PACKAGE / audience).glob("*.py"))


@pytest.mark.parametrize("audience", sorted(FORBIDDEN))
def test_no_module_imports_code_of_an_audience_after_it(audience: str) -> None:
    assert files_of(audience)
    wrong = [
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in files_of(audience)
        for name in module_level_imports(path)
        if name.startswith(FORBIDDEN[audience])
    ]
    assert wrong == []


def test_an_upgrade_loads_no_developer_code_and_no_revision_writer(
    fresh_database: FreshDatabase,
) -> None:
    url = fresh_database()
    done = run(["python", "-X", "importtime", "-m", "alembic", "upgrade", "head"], environment(url))
    assert done.returncode == 0, done.stderr
    loaded = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "media_db.deploy.environment" in loaded  # the probe sees our modules
    assert [name for name in loaded if name.startswith(("media_db.autogen", "media_db.dev"))] == []


def test_old_entry_points_still_run(migrated: URL) -> None:
    status = run(["python", "-m", "media_db.status"], environment(migrated))
    assert status.returncode == 0, status.stderr
    assert "All clear" in status.stdout

    usage = run(["python", "-m", "media_db.backup"], environment(migrated))
    assert usage.returncode == 2
    assert "usage: python -m media_db.deploy.backup restore DIRECTORY" in usage.stderr

    probe = "import os; print(os.environ['DATABASE_URL'] == os.environ['EXPECTED'])"
    expected = migrated.render_as_string(hide_password=False)
    passed = run(
        ["python", "-m", "media_db.local_server", "exec", "--", "python", "-c", probe],
        environment(migrated, EXPECTED=expected),
    )
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.strip() == "True"

"""media_db installs as one package with the project's name and version, the models inside it,
into another environment (as a wheel, or editable), and docs/data-access.md's example runs there
from any directory, beside an application's own `models` package; the public names all import
from `media_db`."""

import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, pool, text

import media_db
from tests.helpers import BIN, REPO_ROOT, environment, job_counts

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
UV = str(BIN / "uv")


def readme_example() -> str:
    page = (REPO_ROOT / "docs" / "data-access.md").read_text()
    return str(re.findall(r"```python\n(.*?)```", page, re.DOTALL)[0])


def test_every_public_name_imports_from_media_db() -> None:
    for name in media_db.__all__:
        assert getattr(media_db, name) is not None, name
    assert {
        "Database",
        "MediaRepository",
        "AnalysisRepository",
        "JobQueue",
        "NewMedia",
        "MediaRecord",
        "AnalysisRecord",
        "JobRecord",
        "InvalidInput",
        "NotFound",
        "InvalidTransition",
    } <= set(media_db.__all__)
    with pytest.raises(AttributeError):
        _ = media_db.NoSuchName


def build_wheel(out: Path) -> Path:
    built = subprocess.run(
        [UV, "build", "--wheel", "--out-dir", str(out), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = out.glob("*.whl")
    return wheel


def test_the_wheel_holds_one_package_with_the_models_and_the_projects_name_and_version(
    tmp_path: Path,
) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
        [metadata] = [name for name in archive.namelist() if name.endswith("METADATA")]
        text = archive.read(metadata).decode()
    assert tops == {"media_db", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "media_db/models/media.py" in archive.namelist()
    # Developer tooling stays in the checkout (the embedded server runs useradd).
    assert not [name for name in archive.namelist() if name.startswith("media_db/dev/")]
    assert "media_db/local_server.py" not in archive.namelist()
    assert "media_db/deploy/status.py" in archive.namelist()
    assert f"Name: {PROJECT['name']}\n" in text
    assert f"Version: {PROJECT['version']}\n" in text


def api_environment(tmp_path: Path, editable: bool) -> Path:
    """A new virtual environment with this project installed into it; its python."""
    venv = tmp_path / "api-venv"
    python = venv / "bin" / "python"
    made = subprocess.run(
        [UV, "venv", "--quiet", "--python", str(BIN / "python"), str(venv)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    target = ["-e", str(REPO_ROOT)] if editable else [str(build_wheel(tmp_path / "dist"))]
    installed = subprocess.run(
        [UV, "pip", "install", "--quiet", "--python", str(python), *target],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    return python


def test_installed_from_the_wheel_the_project_folder_holds_the_deploy_facts(
    tmp_path: Path,
) -> None:
    python = api_environment(tmp_path, editable=False)
    deploy = tmp_path / "deploy"  # what an operator runs alembic from
    deploy.mkdir()
    shutil.copy(REPO_ROOT / "alembic.ini", deploy)
    probe = (
        "import sys; from pathlib import Path; from media_db.deploy import backup, history; "
        "run = backup.Run(backup.DEFAULT_DIRECTORY); "
        "print(history.project_version()); print(run.folder()); "
        "print(sorted(m for m in sys.modules if m.startswith('media_db.dev')))"
    )
    ran = subprocess.run(
        [str(python), "-c", probe],
        cwd=deploy,
        env={k: v for k, v in environment().items() if k not in ("PYTHONPATH", "ALEMBIC_CONFIG")},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    version, backups, dev_modules = ran.stdout.splitlines()
    assert version.split("+")[0] == PROJECT["version"]
    assert Path(backups) == deploy / ".local" / "backups"
    assert dev_modules == "[]"


@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_readme_example_runs_from_another_environment_and_directory(
    migrated: URL, tmp_path: Path, editable: bool
) -> None:
    python = api_environment(tmp_path, editable)
    elsewhere = tmp_path / "api"
    elsewhere.mkdir()
    (elsewhere / "example.py").write_text(readme_example())
    # Most applications have a `models` package of their own.
    (elsewhere / "models").mkdir()
    (elsewhere / "models" / "__init__.py").write_text("class Article: ...\n")
    with create_engine(migrated, poolclass=pool.NullPool).begin() as connection:
        connection.execute(text("INSERT INTO processing_jobs (workflow_type) VALUES ('n8n-ocr')"))
    ran = subprocess.run(
        [str(python), "example.py"],
        cwd=elsewhere,
        env={k: v for k, v in environment(migrated).items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert "transcoding" in ran.stdout
    stats = "WorkerStats(completed=1, failed=0, retried=0, snoozed=0, cancelled=0, lost=0)"
    assert stats in ran.stdout
    # The example's worker is scoped to its workflow: another's job, on the shared database,
    # stays queued.
    assert job_counts(migrated) == {"completed": 1, "queued": 1}

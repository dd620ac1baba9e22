"""Deploy safety: replicas that upgrade at once serialise on the migration lock and apply each
revision once; a revision failing half-way leaves the previous revision intact; a downgrade
that would drop rows refuses unless the operator consents."""

import argparse
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, pool, text

from media_db.deploy.project import VERSION_TABLE
from tests.conftest import FreshDatabase
from tests.helpers import HEAD, OURS, REPO_ROOT, alembic_config, environment, run

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix


def test_eight_concurrent_upgrades_apply_each_revision_once(
    fresh_database: FreshDatabase,
) -> None:
    env = environment(fresh_database())
    with ThreadPoolExecutor(8) as replicas:
        results = list(replicas.map(lambda _: run(["alembic", "upgrade", "head"], env), range(8)))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr[-500:] for r in results]
    logs = "".join(r.stderr for r in results)
    applied = re.findall(r"Running upgrade (\S*) -> (\d+),", logs)
    assert sorted(target for _, target in applied) == [f"{n:04d}" for n in range(1, int(HEAD) + 1)]
    assert all(f"Database at revision {HEAD} (head)" in r.stderr for r in results)


def test_a_revision_failing_half_way_leaves_the_previous_one(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    project = tmp_path / "project"
    for name in ("alembic.ini", "alembic", "models", "media_db"):
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, project / name, symlinks=True)
        else:
            project.mkdir(exist_ok=True)
            shutil.copy2(REPO_ROOT / name, project / name)
    broken = project / "alembic" / "versions" / "2026_11_26_9999_broken.py"
    broken.write_text(f'''"""Creates a table, then fails."""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{HEAD}"
branch_labels = depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("SELECT 1 / 0")


def downgrade() -> None:
    pass
''')
    url = fresh_database()
    result = run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "alembic"),
            "-c",
            str(project / "alembic.ini"),
            "upgrade",
            "head",
        ],
        environment(url),
    )
    assert result.returncode != 0
    assert "division by zero" in result.stderr + result.stdout
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        assert connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")) == HEAD
        assert connection.scalar(text("SELECT to_regclass('half_done')")) is None


def test_downgrade_that_would_drop_rows_refuses_without_consent(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), OURS)
        connection.execute(
            text("INSERT INTO media_items (source_url, source_type) VALUES ('a', 's'), ('b', 's')")
        )
        connection.commit()
        with pytest.raises(CommandError, match=r"would drop media_items \(2 rows\)"):
            command.downgrade(alembic_config(connection), "base")
        assert connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")) == OURS
        assert connection.scalar(text("SELECT count(*) FROM media_items")) == 2

        command.downgrade(alembic_config(connection), "0001")  # drops no table: allowed
        consenting = alembic_config(connection)
        consenting.cmd_opts = argparse.Namespace(x=["allow-data-loss=true"])
        command.downgrade(consenting, "base")
        assert connection.scalar(text("SELECT to_regclass('media_items')")) is None


def test_empty_tables_roll_back_without_consent(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        command.downgrade(alembic_config(connection), "base")
        assert connection.scalar(text("SELECT to_regclass('media_items')")) is None


def test_make_downgrade_consents_with_allow_data_loss(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    env = environment(url)
    upgraded = run(["make", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.execute(text("INSERT INTO processing_jobs (workflow_type) VALUES ('t')"))
    refused = run(["make", "downgrade", "REV=base"], env)
    assert refused.returncode != 0
    assert "processing_jobs (1 row)" in refused.stdout + refused.stderr
    consented = run(["make", "downgrade", "REV=base"], {**env, "ALLOW_DATA_LOSS": "1"})
    assert consented.returncode == 0, consented.stdout + consented.stderr

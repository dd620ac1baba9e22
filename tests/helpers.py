"""Small things several tests need: Alembic configs, CLI runs with a chosen database."""

import os
import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection

from media_db.settings import PART_VARIABLES

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATABASE_VARIABLES = ("DATABASE_URL", *PART_VARIABLES)


def alembic_config(connection: Connection | None = None) -> Config:
    """Our alembic.ini; with a connection, env.py migrates through it (as pytest-alembic does)."""
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["skip_logging_config"] = True
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def environment(url: URL | None = None, /, **extra: str) -> dict[str, str]:
    """os.environ without any database setting, then `url` as DATABASE_URL and `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in DATABASE_VARIABLES}
    if url is not None:
        env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    return {**env, **extra}


def run(
    args: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root with the venv's tools first on PATH."""
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    return subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


HEAD = str(ScriptDirectory.from_config(alembic_config()).get_current_head())

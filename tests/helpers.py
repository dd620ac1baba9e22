"""Small things several tests need: Alembic configs, CLI runs with a chosen database, a
throwaway copy of the project."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, create_engine, pool, text

from media_db.deploy import project
from media_db.settings import DIRECT_PARTS, PART_VARIABLES

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATABASE_VARIABLES = (
    "DATABASE_URL",
    *PART_VARIABLES,
    "DIRECT_DATABASE_URL",
    *DIRECT_PARTS,
    "POSTGRES_POOLER",
)
# Set when the suite runs under `make test`: a make the tests start is a user's own, not a
# sub-make carrying the outer one's command-line variables and jobserver.
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def alembic_config(connection: Connection | None = None) -> Config:
    """Our alembic.ini; with a connection, env.py migrates through it (as pytest-alembic does)."""
    config = project.alembic_config()
    config.attributes["skip_logging_config"] = True
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def environment(url: URL | None = None, /, **extra: str) -> dict[str, str]:
    """os.environ without any database or make setting, then `url` as DATABASE_URL and
    `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in (*DATABASE_VARIABLES, *MAKE_VARIABLES)}
    if url is not None:
        env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    return {**env, **extra}


def analyzed_plan(url: URL, statement: str, params: dict[str, Any]) -> dict[str, Any]:
    """The top node of the statement's plan, run under EXPLAIN (ANALYZE, BUFFERS) and rolled
    back."""
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        found = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params
        ).scalar_one()
        connection.rollback()
    plan = found if isinstance(found, list) else json.loads(found)
    return dict(plan[0]["Plan"])


def generic_plan(url: URL, statement: str, params: dict[str, Any]) -> dict[str, Any]:
    """The plan PostgreSQL keeps for a prepared statement once it stops planning each execution
    anew (its generic plan, forced here), as EXPLAIN shows it. The statement is run once, to
    prepare it, and rolled back."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        raw = connection.connection.driver_connection
        assert raw is not None
        raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        raw.execute(statement, params, prepare=True)
        prepared = raw.execute(
            "SELECT name, parameter_types::text[] FROM pg_prepared_statements"
        ).fetchone()
        assert prepared is not None
        name, types = prepared
        arguments = ", ".join(f"%s::{type_}" for type_ in types)
        # Client-side binding: a utility statement's own parameters get no types.
        explain = f"EXPLAIN (FORMAT JSON) EXECUTE {name}({arguments})"
        found = psycopg.ClientCursor(raw).execute(explain, [params[k] for k in names]).fetchone()
        connection.rollback()
    assert found is not None
    return dict(found[0][0]["Plan"])


def run(
    args: list[str],
    env: dict[str, str],
    stdin: str | None = None,
    timeout: float = 180,
    cwd: Path = REPO_ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run a command (from the repository root unless `cwd`) with the venv's tools first on
    PATH."""
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


HEAD = str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def _our_revisions() -> tuple[str, ...]:
    """The revisions this project ships: those the "What the revisions do" table in
    docs/deploy.md documents. Revisions a user adds above them are theirs: tests of our
    revisions target the newest of ours (OURS), so they hold whatever a user's revisions add (a
    NOT NULL column whose downgrade asks for consent, a CHECK, an index)."""
    deploy = (REPO_ROOT / "docs" / "deploy.md").read_text()
    table = deploy[deploy.index("### What the revisions do") :].split("\n\n")[1]
    return tuple(re.findall(r"^\| (\d{4}) \|", table, re.M))


OUR_REVISIONS = _our_revisions()
OURS = OUR_REVISIONS[-1]


# Every process `start` made, and every Followed reader, until the test's end closes them
# (tests/conftest.py): a pipe left open leaks into a later test as a ResourceWarning.
STARTED: list[subprocess.Popen[str]] = []
FOLLOWED: list["Followed"] = []


def start(args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> subprocess.Popen[str]:
    """`run`, but in the background: the caller waits on it (or kills it)."""
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    STARTED.append(process)
    return process


def close_started() -> None:
    """Kill what a test left running, then close every pipe of what it started (once its
    readers have seen the end)."""
    for process in STARTED:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    for followed in FOLLOWED:
        for reader in followed.readers:
            reader.join(timeout=30)
    for process in STARTED:
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    STARTED.clear()
    FOLLOWED.clear()


class Followed:
    """A background command whose output is read as it comes (so its pipes never fill), letting
    a test wait for a log line instead of sleeping."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.streams = ((process.stdout, self.stdout), (process.stderr, self.stderr))
        self.readers = [
            threading.Thread(target=self._read, args=pair, daemon=True) for pair in self.streams
        ]
        for reader in self.readers:
            reader.start()
        FOLLOWED.append(self)

    @staticmethod
    def _read(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for(self, line: str, seconds: float = 180) -> None:
        """Until stderr holds `line`; fails at once if the command ends without it."""
        deadline = time.monotonic() + seconds
        while not any(line in logged for logged in list(self.stderr)):
            if self.process.poll() is not None:  # ended: what it wrote is all there is
                for reader in self.readers:
                    reader.join(seconds)
                assert any(line in logged for logged in self.stderr), "".join(self.stderr)
                return
            assert time.monotonic() < deadline, f"no {line!r} in {seconds} s: {self.stderr}"
            time.sleep(0.05)

    def communicate(self, timeout: float = 300) -> tuple[str, str]:
        self.process.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        for stream, _ in self.streams:
            if stream is not None:
                stream.close()
        return "".join(self.stdout), "".join(self.stderr)


def job_counts(url: URL) -> dict[str, int]:
    """Jobs per status, as the database has them."""
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        rows = connection.execute(
            text("SELECT status, count(*) FROM processing_jobs GROUP BY status")
        ).all()
    return {status: count for status, count in rows}


PROJECT_FILES = [
    "alembic.ini",
    "alembic",
    "docs",
    "models",
    "media_db",
    "tests",
    "Makefile",
    "pyproject.toml",
    "README.md",
    "uv.lock",
]


def project_copy(tmp_path: Path) -> Path:
    """A copy of the project a test may edit (models, revisions), sharing this .venv."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            # With the bytecode (tests/conftest.py compiles it; copies keep its source's
            # mtime, so it stays valid until a test edits the file).
            shutil.copytree(source, copy / name, symlinks=True)
        else:
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(REPO_ROOT / ".venv")
    return copy


def edit(path: Path, *replacements: tuple[str, str]) -> None:
    """Replace each anchor (which must be there, once) in the file."""
    source = path.read_text()
    for anchor, replacement in replacements:
        assert source.count(anchor) == 1, f"{anchor!r} is not in {path} exactly once"
        source = source.replace(anchor, replacement)
    path.write_text(source)


NEXT_REVISION = f"{int(HEAD) + 1:04d}"


API_PROBE = """
import asyncio, sys
from media_db import *  # noqa: F403 - the probe's body uses the public names
from media_db import settings
from media_db.pool import Database

async def main() -> None:
    url = settings.database_url({{"DATABASE_URL": sys.argv[1]}})
    async with await Database.connect(url) as db:
{body}

asyncio.run(main())
"""


def api_works(project: Path, url: URL, body: str, *args: str) -> None:
    """`body` (statements indented for the probe's `async with ... as db:` block, the public
    names of `media_db` in scope, `sys.argv[2:]` the `args`) runs against `url` with the
    project copy's data layer, in a process of its own."""
    plain = url.render_as_string(hide_password=False)
    probe = run(
        ["python", "-c", API_PROBE.format(body=body), plain, *args], environment(), cwd=project
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr

"""A consented drop's backup can be trusted: written once per table whatever the lock-timeout
retries (the last attempt's rows, the ones the drop removed), its folder checked before the first
step, every file verified against the manifest's rows and checksum before anything is restored,
a second restore changing nothing, and alembic killed at any step of the downgrade losing no
row."""

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, text

from media_db.deploy.project import VERSION_TABLE
from tests.deploy.test_consented_loss_is_backed_up_first import SEED, contents
from tests.faults import scalar, wait_until
from tests.helpers import BIN, HEAD, alembic_config, environment, run, start

RESTORE = ["python", "-m", "media_db.deploy.backup", "restore"]
DROP_ORDER = ["processing_jobs", "analysis_results", "media_items"]


class Logs:
    """A background alembic run whose log lines are read as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process, self.lines = process, list[str]()
        assert process.stderr is not None
        stream = process.stderr
        self.reader = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self.reader.start()

    def saw(self, fragment: str) -> bool:
        return any(fragment in line for line in self.lines)

    def reached(self, revision: str) -> bool:
        """Has the run started the downgrade of `revision`, or of one below it?"""
        steps = [
            line.split("Running downgrade ")[1]
            for line in self.lines
            if "Running downgrade " in line
        ]
        return any(int(step.split(" ")[0]) <= int(revision) for step in steps)

    def finish(self, timeout: float = 180) -> str:
        """Its stdout and log lines, once it has ended."""
        assert self.process.stdout is not None
        with self.process.stdout as out:
            printed = out.read()
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=30)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return printed + "".join(self.lines)


def alembic(env: dict[str, str], *args: str) -> Logs:
    return Logs(start([str(BIN / "alembic"), *args], env))


def at_revision(engine: Engine, revision: str, seed: bool = True) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), revision)
        if seed:
            connection.exec_driver_sql(SEED)
            connection.commit()


def seeded_with_consent(
    engine: Engine, tmp_path: Path, revision: str
) -> tuple[dict[str, list[str]], Path, dict[str, str]]:
    """The database at `revision` with rows; its contents, where backups go, and the
    environment of a consented run."""
    at_revision(engine, revision)
    with engine.connect() as connection:
        before = contents(connection)
    backups = tmp_path / "backups"
    env = environment(engine.url, MIGRATION_BACKUP_DIR=str(backups), ALLOW_DATA_LOSS="1")
    return before, backups, env


def revision_of(engine: Engine) -> object:
    with engine.connect() as connection:
        return scalar(connection, f"SELECT version_num FROM {VERSION_TABLE}")


def only_backup(root: Path) -> Path:
    [directory] = [path for path in root.iterdir() if path.is_dir()]
    return directory


def test_a_retried_drop_is_backed_up_once_with_the_rows_it_dropped(
    engine: Engine, tmp_path: Path
) -> None:
    _, backups, env = seeded_with_consent(engine, tmp_path, "0001")
    reader = engine.connect()  # holds analysis_results: every drop attempt times out on it
    reader.execute(text("SELECT FROM analysis_results LIMIT 1"))
    downgrade = alembic(
        env, "-x", "lock-timeout=1s", "-x", "lock-retries=6", "-x", "lock-retry-backoff=1s",
        "downgrade", "base",
    )  # fmt: skip
    wait_until(lambda: downgrade.saw("Lock timeout (attempt 2 of 7"), "two attempts fail", 120)
    with engine.begin() as writer:  # committed between attempts: the drop must back it up too
        writer.execute(text("INSERT INTO processing_jobs (workflow_type) VALUES ('late')"))
    with engine.connect() as connection:
        before = contents(connection)
    reader.rollback()
    reader.close()
    logs = downgrade.finish()
    assert downgrade.process.returncode == 0, logs
    directory = only_backup(backups)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert [entry["table"] for entry in manifest["entries"]] == DROP_ORDER
    assert {entry["table"]: entry["rows"] for entry in manifest["entries"]} == {
        table: len(rows) for table, rows in before.items()
    }
    # Back at the revision the rows were backed up from: later ones add columns of their own.
    assert run(["alembic", "upgrade", "0001"], env).returncode == 0
    restored = run(["make", "restore", f"BACKUP={directory}"], env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with engine.connect() as connection:
        assert contents(connection) == before


@pytest.fixture
def small_folder(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB file system: too small for the seeded tables (a real mount; the suite runs as
    root, as CI does)."""
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "read-only"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_backup_folder_that_cannot_take_the_backup_refuses_before_any_step(
    engine: Engine, small_folder: Path, read_only_folder: Path
) -> None:
    at_revision(engine, "head")
    with engine.begin() as connection:  # more than 64 KiB of rows
        connection.exec_driver_sql(
            "INSERT INTO media_items (source_url, source_type) "
            "SELECT 'https://example.com/' || n, 'youtube' FROM generate_series(1, 3000) n"
        )
    with engine.connect() as connection:
        before = contents(connection)
    for folder, reason in (
        (small_folder, "free, and the data to back up takes about"),
        (read_only_folder, "cannot be written (Read-only file system)"),
    ):
        env = environment(engine.url, ALLOW_DATA_LOSS="1", MIGRATION_BACKUP_DIR=str(folder))
        refused = run(["alembic", "downgrade", "base"], env)
        assert refused.returncode != 0
        [line] = [line for line in refused.stdout.splitlines() if line.strip()]
        assert line.startswith("FAILED: Refusing to migrate: it would drop "), line
        assert f"the backup folder {folder}" in line, line
        assert reason in line, line
        assert "Nothing was changed" in line, line
        assert revision_of(engine) == HEAD
        with engine.connect() as connection:
            assert contents(connection) == before
    assert not any(small_folder.iterdir())


def damage(directory: Path, copy: Path, file: str, how: str) -> Path:
    copy.mkdir()
    for path in directory.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    data = (copy / file).read_bytes()
    (copy / file).write_bytes(
        {
            "emptied": b"",
            "truncated": data[: len(data) // 2],
            "changed": data.replace(b"https://example.com/1,", b"https://example.com/9,", 1),
        }[how]
    )
    assert (copy / file).read_bytes() != data
    return copy


def test_a_damaged_backup_is_refused_naming_the_file_and_a_second_restore_changes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    before, backups, env = seeded_with_consent(engine, tmp_path, "head")
    assert run(["alembic", "downgrade", "base"], env).returncode == 0
    assert run(["alembic", "upgrade", "head"], env).returncode == 0
    directory = only_backup(backups)
    empty: dict[str, list[str]] = {table: [] for table in before}
    for file, how in (
        ("processing_jobs.csv", "emptied"),
        ("analysis_results.csv", "truncated"),
        ("media_items.csv", "changed"),
    ):
        damaged = damage(directory, tmp_path / how, file, how)
        refused = run([*RESTORE, str(damaged)], env)
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == [
            f"Nothing restored: {damaged / file} is damaged: its sha256 differs from the "
            f"manifest's (emptied, changed or truncated since the backup of its "
            f"{len(before[file.removesuffix('.csv')]):,} rows)"
        ]
        with engine.connect() as connection:
            assert contents(connection) == empty

    restored = run([*RESTORE, str(directory)], env)
    assert restored.returncode == 0, restored.stderr
    assert f"media_items: {len(before['media_items']):,} restored" in restored.stdout
    again = run([*RESTORE, str(directory)], env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"Nothing restored: every row of {directory} is already there; nothing was changed."
    ]
    with engine.connect() as connection:
        assert contents(connection) == before


def test_alembic_killed_at_each_step_of_a_retried_consented_downgrade_loses_no_row(
    engine: Engine, tmp_path: Path
) -> None:
    before, backups, env = seeded_with_consent(engine, tmp_path, "head")
    retried = ("-x", "lock-timeout=1s", "-x", "lock-retries=3", "-x", "lock-retry-backoff=1s")
    with engine.connect() as connection:
        rows = row_ids(connection)
    for revision in [f"{n:04d}" for n in range(int(HEAD), 0, -1)]:
        kill_in_downgrade_of(engine, env, retried, revision)
        if revision_of(engine) is None:
            # The run got through 0001 before the kill landed (the steps below 0005 take
            # milliseconds; seen on a loaded machine): its consented drop took a backup first,
            # and the restores below must put every row back.
            break
        with engine.connect() as connection:
            # Every row is still there (a consented step may have dropped a column of theirs:
            # the restore below puts its values back).
            assert row_ids(connection) == rows, f"killed at {revision}: rows lost"
    finished = run(["alembic", *retried, "downgrade", "base"], env)
    assert finished.returncode == 0, finished.stderr
    assert revision_of(engine) is None
    assert run(["alembic", "upgrade", "head"], env).returncode == 0
    last = max(path for path in backups.iterdir() if path.is_dir())
    restored = run(["make", "restore", f"BACKUP={last}"], env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    # The killed attempts' backups: rows already back change nothing; the columns a consented
    # step dropped before a kill (0010's) come back by key.
    # (A kill between making a folder and writing its manifest leaves nothing to restore there.)
    attempts = (path for path in backups.iterdir() if (path / "manifest.json").is_file())
    for earlier in sorted(path for path in attempts if path != last):
        again = run([*RESTORE, str(earlier)], env)
        assert again.returncode == 0, again.stderr
    with engine.connect() as connection:
        assert contents(connection) == before


def row_ids(connection: Connection) -> dict[str, list[str]]:
    """Each of our tables' row ids, while the table exists."""
    found = {}
    for table in ("media_items", "analysis_results", "processing_jobs"):
        if connection.scalar(text("SELECT to_regclass(:t)"), {"t": table}) is not None:
            found[table] = sorted(map(str, connection.scalars(text(f"SELECT id FROM {table}"))))
    connection.rollback()
    return found


def kill_in_downgrade_of(
    engine: Engine, env: dict[str, str], options: tuple[str, ...], revision: str
) -> None:
    """kill -9 a `downgrade base` once it has started downgrading `revision` (0001: once one of
    its attempts has timed out on a reader and it is waiting to retry). For 0002 and 0001 a
    reader of analysis_results holds the downgrade inside the revision: 0002's step is quick,
    and a kill sent as it starts could land after 0001 has dropped the tables."""
    reader = engine.connect()
    if revision in ("0002", "0001"):
        reader.execute(text("SELECT FROM analysis_results LIMIT 1"))
    downgrade = alembic(env, *options, "downgrade", "base")
    # Each wait ends with the run too (it may get past the step first on a loaded machine),
    # and is bounded only against a hang.
    ended = downgrade.process.poll
    wait_until(
        lambda: downgrade.reached(revision) or ended() is not None,
        f"downgrade {revision} starts",
        600,
    )
    if revision == "0001":
        wait_until(
            lambda: downgrade.saw("Lock timeout (attempt 1") or ended() is not None, "a retry", 600
        )
    if downgrade.process.poll() is None:
        os.kill(downgrade.process.pid, signal.SIGKILL)
    downgrade.finish()
    reader.rollback()
    reader.close()

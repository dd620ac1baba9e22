"""Fixtures of the runtime tests."""

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from media_db.dev.embedded import LocalServer


@pytest.fixture
def restartable() -> Iterator[LocalServer]:
    """An embedded server of the test's own, which it may stop, restart and start again (on the
    same port: `ensure_running(port)`). It asks for a password, so a test can check that none
    leaks."""
    # Not under pytest's tmp_path: a pytest starting elsewhere resets /tmp/pytest-of-<user> to
    # 0700, and the server's system user must keep reaching its folder for stop and restart.
    home = Path(tempfile.mkdtemp(prefix="media-db-restart-"))
    server = LocalServer(home=home / "postgres", superuser_password=secrets.token_hex(8))
    server.ensure_running()
    yield server
    server.destroy()
    shutil.rmtree(home, ignore_errors=True)

"""A revision's message is text wherever it is written, never code: quotes, triple quotes,
backslashes, newlines, `%`, template syntax and unprintable characters in `make revision M=...`
or `alembic revision -m` give a revision file that imports and runs, whose docstring reads the
message back, and whose file name holds word characters only."""

import ast
import importlib.util
import random
import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy import URL

from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, edit, environment, project_copy, run
from tests.model_edits import add_column

# What breaks a docstring, a file name, a template or a log line, and some plain words.
FRAGMENTS = [
    '"""', "'''", '"', "'", "\\", "\\\\", '\\"""', "\n", "\r\n", "\t", "%", "%(rev)s", "%%",
    "%s", "${message}", "<%", "%>", "## ", "\n% endif\n", "{", "}", "\x00", "\x07", "\x1b[31m",
    "\u2028", "\u200b", "\udcff", "é", "🎞", "import os; os.system('touch {marker}')",
    "caption", "add", "media", " ", "  ", "x",
]  # fmt: skip
ROUNDS = 60
HOOKS = "hooks = ruff_fix, ruff_format, regenerate\n"


def nasty_messages(marker: Path) -> list[str]:
    """The issue's two, every fragment alone, then random mixes: the same list on every run."""
    fragments = [f.replace("{marker}", str(marker)) for f in FRAGMENTS]
    chosen = random.Random(23)  # noqa: S311 - a fixed sample of inputs, not a secret
    return [
        f'caption"""\nimport os; os.system("touch {marker}")\n"""',
        'a"""b',
        *fragments,
        *("".join(chosen.choices(fragments, k=chosen.randint(1, 12))) for _ in range(ROUNDS)),
    ]


def as_docstring_line(message: str) -> str:
    """What the docstring's first line reads back: the message on one line (ruff format may
    pad it with a space, where it starts or ends with a quote)."""
    return " ".join(message.split())


def import_revision(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(f"revision_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nasty_messages_render_into_revisions_that_import_and_run(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    project, marker = project_copy(tmp_path), tmp_path / "code-ran"
    # The hooks that rewrite the revision file run on each; records and the diagram are made
    # from the models, not the file, and are the same a hundred times (tests/autogen covers them).
    edit(project / "alembic.ini", (HOOKS, "hooks = ruff_fix, ruff_format\n"))
    config = Config(str(project / "alembic.ini"))
    messages = nasty_messages(marker)
    first = int(NEXT_REVISION)
    written = {}
    for number, message in enumerate(messages, start=first):
        script = command.revision(config, message=message, rev_id=f"{number:04d}")
        assert isinstance(script, Script)
        written[Path(script.path)] = message
    for path, message in written.items():
        assert re.fullmatch(r"\w+\.py", path.name), path.name
        source = path.read_text()
        ast.parse(source)
        module = import_revision(path)
        doc = module.__doc__
        assert isinstance(doc, str)
        assert doc.splitlines()[0].strip() == as_docstring_line(message), path.name
        assert callable(getattr(module, "upgrade", None))
    assert not marker.exists(), "a revision message ran as code"

    url: URL = fresh_database()
    env = environment(url)
    listed = run(["alembic", "history"], env, cwd=project)
    assert listed.returncode == 0, listed.stderr
    for step in (["alembic", "upgrade", "head"], ["alembic", "downgrade", "base"]):
        done = run(step, env, cwd=project, timeout=600)
        assert done.returncode == 0, done.stderr
    assert not marker.exists(), "a revision message ran as code"
    heads = ScriptDirectory.from_config(config).get_heads()
    assert heads == [f"{first + len(messages) - 1:04d}"]


def test_make_revision_with_a_pending_change_writes_the_message_as_text(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    project, marker = project_copy(tmp_path), tmp_path / "code-ran"
    url: URL = fresh_database()
    env = environment(url)
    assert run(["alembic", "upgrade", "head"], env, cwd=project).returncode == 0
    add_column(
        project / "models" / "media.py",
        "MediaItem",
        "probe_caption: Mapped[str | None] = mapped_column(Text)",
    )
    message = f'caption"""\nimport os; os.system("touch {marker}")\n"""'
    made = run(["make", "revision", f"M={message}"], env, cwd=project)
    assert made.returncode == 0, made.stdout + made.stderr
    [path] = (project / "alembic" / "versions").glob(f"*_{NEXT_REVISION}_*.py")
    assert re.fullmatch(r"\w+\.py", path.name), path.name
    for step in (["alembic", "history"], ["alembic", "upgrade", "head"], ["alembic", "current"]):
        done = run(step, env, cwd=project)
        assert done.returncode == 0, done.stderr
    assert not marker.exists(), "the revision message ran as code"
    doc = import_revision(path).__doc__
    assert isinstance(doc, str)
    assert doc.splitlines()[0].strip() == as_docstring_line(message)

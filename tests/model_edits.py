"""Edits tests make to a project copy's models, placed by the module's syntax tree rather than
next to a line of text: a user's own models (a column, a CHECK, table options added where ours
are) must not break the tests."""

import ast
from pathlib import Path

from sqlalchemy import URL, create_engine, pool, text


def add_column(path: Path, model: str, source: str) -> None:
    """`source` (e.g. `probe_path: Mapped[str | None]`) as the last statement of class `model`."""
    _insert(path, (_class(path, model).end_lineno or 0) + 1, 0, f"    {source}\n")


def add_table_arg(path: Path, model: str, source: str) -> None:
    """`source` (an Index, a constraint) in `model`'s __table_args__, before its options dict."""
    elements = _table_args(path, model).elts
    if elements and isinstance(elements[-1], ast.Dict):
        options = elements[-1]
        _insert(path, options.lineno, options.col_offset, f"{source},\n{' ' * options.col_offset}")
    else:
        last = elements[-1]
        _insert(path, last.end_lineno or 0, last.end_col_offset or 0, f",\n        {source}")


def add_table_option(path: Path, model: str, key: str, value: str) -> None:
    """`key: value` in `model`'s __table_args__ options dict (added if it has none)."""
    elements = _table_args(path, model).elts
    if elements and isinstance(elements[-1], ast.Dict):
        options = elements[-1]  # last in the literal: ours wins over an equal key
        line, column = options.end_lineno or 0, (options.end_col_offset or 1) - 1
        lines = path.read_text().splitlines(keepends=True)
        before = "".join(lines[: line - 1]) + lines[line - 1].encode()[:column].decode()
        separator = "" if before.rstrip().endswith((",", "{")) else ", "
        _insert(path, line, column, f"{separator}{key!r}: {value}")
    else:
        add_table_arg(path, model, f"{{{key!r}: {value}}}")


def add_import(path: Path, source: str) -> None:
    """`source` after the module's last top-level import."""
    tree = ast.parse(path.read_text())
    last = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)][-1]
    _insert(path, (last.end_lineno or 0) + 1, 0, f"{source}\n")


def append(path: Path, source: str) -> None:
    path.write_text(f"{path.read_text().rstrip()}\n\n\n{source.strip()}\n")


def _class(path: Path, name: str) -> ast.ClassDef:
    tree = ast.parse(path.read_text())
    [found] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name]
    return found


def _table_args(path: Path, model: str) -> ast.Tuple:
    [value] = [
        node.value
        for node in _class(path, model).body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__table_args__" for t in node.targets)
    ]
    assert isinstance(value, ast.Tuple), f"{model}.__table_args__ is not a tuple literal"
    return value


def _insert(path: Path, line: int, column: int, text: str) -> None:
    """`text` at 1-based `line`, 0-based `column` (ast's positions: UTF-8 byte offsets)."""
    lines = path.read_text().splitlines(keepends=True)
    if line > len(lines):
        lines.append("")
    encoded = lines[line - 1].encode()
    lines[line - 1] = (encoded[:column] + text.encode() + encoded[column:]).decode()
    path.write_text("".join(lines))


# A column of the tests' own, for those that rename or drop one: our columns may carry a user's
# index or CHECK (their first revision), which would break their `make revision`, not ours.
PROBE_PATH = "probe_path: Mapped[str | None] = mapped_column(Text)"
PROBE_PATH_LINE = f"    {PROBE_PATH}\n"


def existing_column(models: Path, url: URL, model: str, source: str, ddl: str) -> None:
    """`source` on `model`, in the model and already in the database by `ddl` (as a revision
    would have left it, without writing and applying one)."""
    add_column(models, model, source)
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.execute(text(ddl))


def existing_probe_path(models: Path, url: URL) -> None:
    existing_column(
        models, url, "MediaItem", PROBE_PATH, "ALTER TABLE media_items ADD COLUMN probe_path text"
    )

"""`make records`: writes media_db/records.py, the typed records the repositories return, from
the models (and `make revision` runs it, so a column added to a model reaches its record).

Generated rather than built at run time so that mypy sees every field with its type; a test
(tests/runtime/test_records_match_models.py) fails when the committed file differs from what
this writes.
"""

import importlib.util
import re
import sys
import tempfile
import traceback
import types
import typing
import uuid
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Float, Numeric, inspect
from sqlalchemy.orm import Mapped

from media_db.dev import REPO_ROOT
from media_db.models import AnalysisResult, Base, MediaItem, ProcessingJob, ProcessingLimit
from media_db.transitions import RENAMED_FROM

MODELS = Base.__module__.rpartition(".")[0]  # the package the records import from
RECORDS_FILE = REPO_ROOT / "media_db" / "records.py"
# Record name -> model. A field per mapped column, named like the column, in table order.
RECORDS: dict[str, type[Base]] = {
    "MediaRecord": MediaItem,
    "AnalysisRecord": AnalysisResult,
    "JobRecord": ProcessingJob,
    "LimitRecord": ProcessingLimit,
}
# Input name -> model: what a caller writes, a field per column the database does not set.
INPUTS: dict[str, type[Base]] = {
    "NewMedia": MediaItem,
    "NewAnalysis": AnalysisResult,
    "NewJob": ProcessingJob,
}
# Columns no input sets: the database's (keys, timestamps), the repository's own (a status).
NOT_AN_INPUT = {("set_by", "server"), ("set_by", "repository")}
HEADER = '''"""What the repositories return: frozen, fully loaded rows, safe to pass around after
the transaction ended (no session, no lazy loading under asyncio).

Generated from the models by `make records` (media_db/dev/gen_records.py; `make revision` runs it):
do not edit. Field names are the columns' keys (their names, unless a rename kept the name the code
uses as the key), in table order; statuses are the models' enums.
The inputs (NewMedia, NewAnalysis, NewJob) are generated the same way: a rename or a new column
reaches them at once; their optional fields are keyword-only, so a new column shifts no argument.
tests/runtime/test_records_match_models.py fails when this file is stale.
"""
'''


class UntypedColumn(Exception):
    """A column whose Python type neither the model nor the column type tells."""


def fields_of(model: type[Base]) -> list[tuple[str, Any]]:
    """(column key, Python type) of each column, in table order: the model's `Mapped[...]`
    annotation, else (a column without one: `Table.append_column`, a bare `Column`) the type
    the column type stands for."""
    annotations = typing.get_type_hints(model)
    by_column = {prop.columns[0].name: prop.key for prop in inspect(model).column_attrs}
    found = []
    for column in model.__table__.columns:
        annotation = annotations.get(by_column.get(column.name, ""))
        if typing.get_origin(annotation) is Mapped:
            (python_type,) = typing.get_args(annotation)  # Mapped[T] -> T
            _reads_back_as_annotated(model, column, python_type)
        else:
            python_type = _python_type(model, column)
        found.append((column.key, python_type))
    return found


def _reads_back_as_annotated(model: type[Base], column: ColumnElement[Any], annotated: Any) -> None:
    """A NUMERIC (not a float type) is read back as a Decimal: a record saying int or float
    would hold what its type does not say."""
    numbers = {k for k in typing.get_args(annotated) or [annotated] if k in (int, float)}
    if isinstance(column.type, Numeric) and not isinstance(column.type, Float) and numbers:
        said = " | ".join(sorted(k.__name__ for k in numbers))
        raise UntypedColumn(
            f"{model.__tablename__}.{column.name}: its type {column.type} is read back as a "
            f"Decimal, and models.{model.__name__} says {said}: annotate it Mapped[Decimal | "
            "None] (from decimal import Decimal), then run make records again"
        )


def _python_type(model: type[Base], column: ColumnElement[Any]) -> Any:
    # The models' own map first (JSONB is dict[str, Any] there), then the type's python_type.
    mapped = (
        python_type
        for python_type, sql_type in Base.type_annotation_map.items()
        if isinstance(column.type, type(sql_type))
    )
    python_type = next(mapped, None) or _generic(column.type.python_type)
    if python_type is object:
        name = f"{model.__tablename__}.{column.name}"
        raise UntypedColumn(
            f"{name}: its type {column.type} stands for no Python type; annotate it in "
            f"models.{model.__name__} ({column.name}: Mapped[<type> | None] = "
            "mapped_column(...)), then run make records again"
        )
    return python_type | None if column.nullable else python_type


def _generic(python_type: type) -> Any:
    """A bare list or dict as the records spell them."""
    generic: dict[type, Any] = {list: list[Any], dict: dict[str, Any]}
    return generic.get(python_type, python_type)


def render() -> str:
    imports = {
        "collections.abc": {"Sequence"},
        "dataclasses": {"dataclass"},
        "typing": {"Any", "Self"},
    }
    plain_imports: set[str] = set()
    blocks = []
    for record, model in RECORDS.items():
        fields = fields_of(model)
        lines = [
            "",
            "",
            "",
            "@dataclass(frozen=True, slots=True)",
            f"class {record}:",
            f'    """A row of `{model.__tablename__}` (models.{model.__name__})."""',
            "",
        ]
        lines += [
            f"    {name}: {_type_name(kind, imports, plain_imports)}" for name, kind in fields
        ]
        arguments = [_converted(f"row[{i}]", kind) for i, (_, kind) in enumerate(fields)]
        body = (
            "cls(*row)"
            if all(argument.startswith("row[") for argument in arguments)
            else f"cls({', '.join(arguments)})"
        )
        lines += [
            "",
            "    @classmethod",
            "    def from_row(cls, row: Sequence[Any]) -> Self:",
            f"        return {body}",
        ]
        if len(lines[-1]) > 100:  # the formatter's line length: one argument per line
            lines[-1:] = [
                "        return cls(",
                *(f"            {argument}," for argument in arguments),
                "        )",
            ]
        blocks.append("\n".join(lines))
    for name, model in INPUTS.items():
        blocks.append(_input_block(name, model, imports, plain_imports))
    if INPUTS:
        imports["dataclasses"].add("KW_ONLY")
    stdlib = [f"import {module}" for module in sorted(plain_imports)]
    stdlib += [
        f"from {module} import {', '.join(sorted(names))}"
        for module, names in sorted(imports.items())
        if module != MODELS
    ]
    ours = f"from {MODELS} import {', '.join(sorted(imports.get(MODELS, set())))}"
    return f"{HEADER}\n{chr(10).join(stdlib)}\n\n{ours}{''.join(blocks)}\n"


def _input_block(
    name: str, model: type[Base], imports: dict[str, set[str]], plain: set[str]
) -> str:
    """A frozen dataclass of the columns a caller may set: the required ones (NOT NULL, no
    server default) first, then the rest defaulting to None (the server default, or NULL),
    keyword-only: a column added in the middle of the table shifts no caller's argument."""
    table = Base.metadata.tables[model.__tablename__]
    settable = [
        (column, kind)
        for column, kind in ((table.c[n], k) for n, k in fields_of(model))
        if not NOT_AN_INPUT & set(column.info.items())
    ]
    required = [(c, k) for c, k in settable if not c.nullable and c.server_default is None]
    optional = [(c, k) for c, k in settable if (c, k) not in required]
    lines = [
        "",
        "",
        "",
        "@dataclass(frozen=True, slots=True)",
        f"class {name}:",
        f'    """What a caller writes to `{table.name}` (models.{model.__name__}): every column '
        "neither\n    the database nor the repository sets. A field left None takes the column's "
        'server\n    default (or NULL)."""',
        "",
        *(f"    {c.key}: {_type_name(_as_given(k), imports, plain)}" for c, k in required),
        *(["    _: KW_ONLY"] if optional else []),
        *(
            f"    {c.key}: {_type_name(_optional(_as_given(k)), imports, plain)} = None"
            for c, k in optional
        ),
    ]
    return "\n".join(lines)


def _optional(kind: Any) -> Any:
    return kind if type(None) in typing.get_args(kind) else kind | None


def _as_given(kind: Any) -> Any:
    """An input's type: an id may be given as its text too (checked, then parsed)."""
    kinds = typing.get_args(kind) or (kind,)
    if uuid.UUID not in kinds:
        return kind
    return uuid.UUID | str | None if type(None) in kinds else uuid.UUID | str


def _type_name(kind: Any, imports: dict[str, set[str]], plain: set[str]) -> str:
    if kind is type(None):
        return "None"
    if kind is Any:
        return "Any"
    arguments = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return " | ".join(_type_name(argument, imports, plain) for argument in arguments)
    if origin := typing.get_origin(kind):
        inner = ", ".join(_type_name(argument, imports, plain) for argument in arguments)
        return f"{_type_name(origin, imports, plain)}[{inner}]"
    module, name = kind.__module__, kind.__qualname__
    if module == "builtins":
        return str(name)
    if module == "uuid":
        plain.add(module)
        return f"{module}.{name}"
    if module.startswith(f"{MODELS}."):
        module = MODELS  # the package's public names
    imports.setdefault(module, set()).add(name)
    return str(name)


def _converted(value: str, kind: Any) -> str:
    """psycopg returns a status as str: the record holds the model's enum."""
    options = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
    enum = options[0] if len(options) == 1 else None
    if not (isinstance(enum, type) and issubclass(enum, Enum)):
        return value
    if type(None) in typing.get_args(kind):
        return f"None if {value} is None else {enum.__name__}({value})"
    return f"{enum.__name__}({value})"


# What every API call and worker imports: with the records given in place of the committed
# ones, a column its code names must still be there.
DATA_LAYER = ("media_db.repositories", "media_db.worker")
FAILED_AT = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')


def data_layer_breaks(records: str) -> str | None:
    """Why the data layer, with these records, would no longer import (None: it would).
    Imported here and then forgotten: this process (`make records`, the revision hook) has
    loaded the models but none of the data layer, so nothing of the committed records is reused,
    and a second interpreter (a second of CPU per `make revision`) is not needed."""
    before = set(sys.modules)
    assert not before & {"media_db.records", *DATA_LAYER}, "the data layer is loaded already"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "records.py").write_text(records)
        spec = importlib.util.spec_from_file_location(
            "media_db.records", Path(folder) / "records.py"
        )
        assert spec is not None
        assert spec.loader is not None
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(sys.modules[spec.name])
            for name in DATA_LAYER:
                importlib.import_module(name)
        except Exception:  # whatever stops the import is the answer
            said = traceback.format_exc()
        else:
            return None
        finally:
            for name in set(sys.modules) - before:
                del sys.modules[name]
    lines = said.strip().splitlines()
    where = [
        f"{Path(m['file']).relative_to(REPO_ROOT)}:{m['line']}"
        for m in FAILED_AT.finditer(said)
        if Path(m["file"]).is_relative_to(REPO_ROOT) and "site-packages" not in m["file"]
    ]
    error = lines[-1]
    missing = re.fullmatch(r"(?:AttributeError|KeyError): '?([\w$]+)'?", error)
    place = f" ({where[-1]})" if where else ""
    if missing is None:
        return f"the data layer no longer imports with these models: {error}{place}"
    key = missing[1]
    renamed = [
        (table.name, column)
        for table in Base.metadata.tables.values()
        for column in table.columns
        if column.info.get(RENAMED_FROM) == key
    ]
    if not renamed:
        return f"the data layer names a column {key!r} the models no longer have{place}"
    table, column = renamed[0]
    return (
        f"{table}.{key} is named by the data layer{place}: rename the column but keep the "
        f"name its code uses as the column's key: {key}: Mapped[...] = "
        f'mapped_column("{column.name}", ..., key="{key}", info={{"{RENAMED_FROM}": "{key}"}}) '
        "(docs/schema-changes.md)"
    )


def main(check: bool = False) -> int:
    """Write the records; `check`: only say, in one line, why they could not be written."""
    try:
        records = render()
    except UntypedColumn as error:
        print(f"make records: {error}", file=sys.stderr)
        return 2
    if (broken := data_layer_breaks(records)) is not None:
        unchanged = "" if check else f"; {RECORDS_FILE.name} is unchanged"
        print(f"make records: {broken}{unchanged}.", file=sys.stderr)
        return 2
    if check:
        return 0
    RECORDS_FILE.write_text(records)
    print(f"wrote {RECORDS_FILE.name} from the models")
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv[1:]))

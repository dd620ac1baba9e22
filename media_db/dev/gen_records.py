"""`make records`: writes media_db/records.py, the typed records the repositories return, from
the models (and `make revision` runs it, so a column added to a model reaches its record).

Generated rather than built at run time so that mypy sees every field with its type; a test
(tests/runtime/test_records_match_models.py) fails when the committed file differs from what
this writes.
"""

import sys
import types
import typing
from enum import Enum
from typing import Any

from sqlalchemy import inspect

from media_db.dev import REPO_ROOT
from models import AnalysisResult, Base, MediaItem, ProcessingJob

RECORDS_FILE = REPO_ROOT / "media_db" / "records.py"
# Record name -> model. A field per mapped column, named like the column, in table order.
RECORDS: dict[str, type[Base]] = {
    "MediaRecord": MediaItem,
    "AnalysisRecord": AnalysisResult,
    "JobRecord": ProcessingJob,
}
HEADER = '''"""What the repositories return: frozen, fully loaded rows, safe to pass around after
the transaction ended (no session, no lazy loading under asyncio).

Generated from the models by `make records` (media_db/dev/gen_records.py; `make revision` runs it):
do not edit. Field names are the column names, in table order; statuses are the models' enums.
tests/runtime/test_records_match_models.py fails when this file is stale.
"""
'''


def fields_of(model: type[Base]) -> list[tuple[str, Any]]:
    """(column name, Python type) of each mapped column, in table order."""
    mapper = inspect(model)
    annotations = typing.get_type_hints(model)
    by_column = {prop.columns[0].name: prop.key for prop in mapper.column_attrs}
    found = []
    for column in model.__table__.columns:
        (python_type,) = typing.get_args(annotations[by_column[column.name]])  # Mapped[T] -> T
        found.append((column.name, python_type))
    return found


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
    stdlib = [f"import {module}" for module in sorted(plain_imports)]
    stdlib += [
        f"from {module} import {', '.join(sorted(names))}"
        for module, names in sorted(imports.items())
        if module != "models"
    ]
    ours = f"from models import {', '.join(sorted(imports.get('models', set())))}"
    return f"{HEADER}\n{chr(10).join(stdlib)}\n\n{ours}{''.join(blocks)}\n"


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
    if module.startswith("models."):
        module = "models"  # the package's public names
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


def main() -> int:
    RECORDS_FILE.write_text(render())
    print(f"wrote {RECORDS_FILE.name} from the models")
    return 0


if __name__ == "__main__":
    sys.exit(main())

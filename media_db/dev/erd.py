"""`make erd`: a Mermaid ER diagram of the models, written to docs/schema.md.

tests/dev/test_schema_diagram_is_current.py fails when the committed file differs from what this
writes, so the diagram cannot go stale.
"""

import re
import sys
from typing import Any

from sqlalchemy import Column, Identity, MetaData
from sqlalchemy.dialects import postgresql

from media_db.dev import REPO_ROOT
from media_db.models import Base

DIAGRAM = REPO_ROOT / "docs" / "schema.md"
HEADER = """# Schema

Generated from the models by `make erd`; do not edit by hand (a test compares it with the models).
Every default below is a server default. Constraints and indexes: see the models in `models/`.

```mermaid
erDiagram
"""


def render(metadata: MetaData = Base.metadata) -> str:
    lines = [HEADER.rstrip("\n")]
    for table in metadata.sorted_tables:
        lines.append(f"    {table.name} {{")
        lines += [f"        {_column(column)}" for column in table.columns]
        lines.append("    }")
    for table in metadata.sorted_tables:
        for key in sorted(table.foreign_keys, key=lambda fk: fk.parent.name):
            optional = "o" if key.parent.nullable else "|"
            action = f", on delete {key.ondelete.lower()}" if key.ondelete else ""
            lines.append(
                f"    {key.column.table.name} |{optional}--o{{ {table.name} : "
                f'"{key.parent.name}{action}"'
            )
    return "\n".join([*lines, "```", ""])


def _column(column: Column[Any]) -> str:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql_type = column.type.compile(dialect=dialect).lower()
    kind = re.sub(r"[^a-z0-9]+", "_", sql_type).strip("_")  # Mermaid types are single words
    keys = [k for k, on in (("PK", column.primary_key), ("FK", column.foreign_keys)) if on]
    notes = ["not null"] if not column.nullable and not column.primary_key else []
    if isinstance(column.server_default, Identity):
        notes.append("identity")
    elif column.server_default is not None:
        default = str(column.server_default.arg.text)  # type: ignore[attr-defined]
        notes.append(f"default {default.replace(chr(34), chr(39))}")
    key_part = f" {', '.join(keys)}" if keys else ""
    note_part = f' "{"; ".join(notes)}"' if notes else ""
    return f"{kind} {column.name}{key_part}{note_part}"


def main() -> int:
    DIAGRAM.parent.mkdir(exist_ok=True)
    DIAGRAM.write_text(render())
    print(f"wrote {DIAGRAM.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A comparable picture of tables as PostgreSQL itself describes them.

Read from the system catalogs (format_type, pg_get_expr, pg_get_constraintdef, pg_get_indexdef),
not from SQLAlchemy reflection, so two schemas compare exactly as the server would dump them:
types with their modifiers, default expressions, constraints and indexes by name and definition.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class Column:
    type: str
    not_null: bool
    default: str | None

    def __str__(self) -> str:
        default = f" DEFAULT {self.default}" if self.default is not None else ""
        return f"{self.type} {'NOT NULL' if self.not_null else 'NULL'}{default}"


@dataclass
class Table:
    columns: dict[str, Column] = field(default_factory=dict)
    column_order: list[str] = field(default_factory=list)
    constraints: dict[str, str] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)
    storage_parameters: dict[str, str] = field(default_factory=dict)


Catalog = dict[str, Table]

COLUMNS = text("""
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid)
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = CAST(:schema AS regnamespace) AND c.relkind IN ('r', 'p')
      AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY c.relname, a.attnum
""")
CONSTRAINTS = text("""
    SELECT c.relname, con.conname, pg_get_constraintdef(con.oid)
    FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
    WHERE c.relnamespace = CAST(:schema AS regnamespace)
""")
INDEXES = text("""
    SELECT c.relname, i.relname, pg_get_indexdef(i.oid)
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class c ON c.oid = x.indrelid
    WHERE c.relnamespace = CAST(:schema AS regnamespace)
""")
STORAGE_PARAMETERS = text("""
    SELECT relname, unnest(reloptions) FROM pg_class
    WHERE relnamespace = CAST(:schema AS regnamespace) AND relkind IN ('r', 'p')
""")
TRIGGERS = text("""
    SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = CAST(:schema AS regnamespace) AND NOT t.tgisinternal
""")


def snapshot(connection: Connection, schema: str | None = None) -> Catalog:
    """Every ordinary table of `schema` (default: the connection's current schema)."""
    schema = schema or connection.scalar(text("SELECT current_schema()"))
    catalog: Catalog = {}
    for table, column, type_, not_null, default in connection.execute(COLUMNS, {"schema": schema}):
        entry = catalog.setdefault(table, Table())
        entry.columns[column] = Column(type_, not_null, default)
        entry.column_order.append(column)
    for table, name, definition in connection.execute(CONSTRAINTS, {"schema": schema}):
        catalog[table].constraints[name] = _unqualified(definition, schema)
    for table, name, definition in connection.execute(INDEXES, {"schema": schema}):
        catalog[table].indexes[name] = _unqualified(definition, schema)
    for table, name, definition in connection.execute(TRIGGERS, {"schema": schema}):
        catalog[table].triggers[name] = _unqualified(definition, schema)
    for table, option in connection.execute(STORAGE_PARAMETERS, {"schema": schema}):
        name, _, value = option.partition("=")
        catalog[table].storage_parameters[name] = value
    return catalog


def differences(expected: Catalog, actual: Catalog, tables: set[str]) -> list[str]:
    """One readable line per difference, over `tables` only (what is ours to compare)."""
    lines: list[str] = []
    for name in sorted(tables):
        want, have = expected.get(name), actual.get(name)
        if want is None and have is None:
            continue  # absent from both (e.g. a table a later revision creates)
        if want is None or have is None:
            lines.append(f"table {name}: {'unexpected' if want is None else 'missing'}")
            continue
        lines += _compare(f"{name} column", want.columns, have.columns)
        lines += _compare(f"{name} constraint", want.constraints, have.constraints)
        lines += _compare(f"{name} index", want.indexes, have.indexes)
        lines += _compare(f"{name} trigger", want.triggers, have.triggers)
        lines += _compare(
            f"{name} storage parameter", want.storage_parameters, have.storage_parameters
        )
    return lines


def _compare(label: str, want: Mapping[str, object], have: Mapping[str, object]) -> list[str]:
    lines = []
    for key in sorted(want.keys() | have.keys()):
        if key not in have:
            lines.append(f"{label} {key}: missing (expected {want[key]})")
        elif key not in want:
            lines.append(f"{label} {key}: unexpected ({have[key]})")
        elif want[key] != have[key]:
            lines.append(f"{label} {key}: expected {want[key]}, found {have[key]}")
    return lines


def _unqualified(definition: str, schema: str) -> str:
    # pg_get_*def name the schema where it is not on the search_path; drop it so two schemas
    # can be compared.
    for prefix in (" ON ", "REFERENCES ", "EXECUTE FUNCTION "):
        definition = definition.replace(f"{prefix}{schema}.", prefix)
    return definition

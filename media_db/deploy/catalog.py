"""A comparable picture of tables as PostgreSQL itself describes them.

Read from the system catalogs (format_type, pg_get_expr, pg_get_constraintdef, pg_get_indexdef,
pg_get_triggerdef, pg_get_functiondef), not from SQLAlchemy reflection, so two schemas compare
exactly as the server would dump them: types with their modifiers, default expressions,
constraints, indexes and triggers by name and definition, and functions with their bodies.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

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

# pg_get_expr, pg_get_constraintdef and pg_get_indexdef take ACCESS SHARE on the table, so they
# wait behind any ACCESS EXCLUSIVE holder: a snapshot that must not wait reads names and flags
# instead ({default}, {constraintdef}, {indexdef}). {only}: some tables only.
COLUMNS = """
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, {default}
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = CAST(:schema AS regnamespace) AND c.relkind IN ('r', 'p')
      AND a.attnum > 0 AND NOT a.attisdropped {only}
    ORDER BY c.relname, a.attnum
"""
DEFINED = {
    "default": "pg_get_expr(d.adbin, d.adrelid)",
    "constraintdef": "pg_get_constraintdef(con.oid)",
    "indexdef": "pg_get_indexdef(i.oid)",
}
NAMED_ONLY = {
    "default": "NULL",
    "constraintdef": "CASE WHEN con.convalidated THEN '' ELSE 'NOT VALID' END",
    "indexdef": "''",
}
CONSTRAINTS = """
    SELECT c.relname, con.conname, {constraintdef}
    FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
    WHERE c.relnamespace = CAST(:schema AS regnamespace) {only}
"""
INDEXES = """
    SELECT c.relname, i.relname, {indexdef}, x.indisvalid
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class c ON c.oid = x.indrelid
    WHERE c.relnamespace = CAST(:schema AS regnamespace) {only}
"""
STORAGE_PARAMETERS = """
    SELECT c.relname, unnest(c.reloptions) FROM pg_class c
    WHERE c.relnamespace = CAST(:schema AS regnamespace) AND c.relkind IN ('r', 'p') {only}
"""
TRIGGERS = """
    SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = CAST(:schema AS regnamespace) AND NOT t.tgisinternal {only}
"""
FUNCTIONS = text("""
    SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
           pg_get_functiondef(p.oid)
    FROM pg_proc p
    WHERE p.pronamespace = CAST(:schema AS regnamespace) AND p.prokind = 'f'
""")


def snapshot(
    connection: Connection,
    schema: str | None = None,
    tables: Collection[str] | None = None,
    definitions: bool = True,
) -> Catalog:
    """Every ordinary table of `schema` (default: the connection's current schema), or only
    `tables`. Without `definitions` it takes no lock on any table: no column defaults, and
    constraints and indexes by name and validity only."""
    schema = schema or connection.scalar(text("SELECT current_schema()"))
    only = "AND c.relname = ANY(:tables)" if tables is not None else ""
    params = {"schema": schema, "tables": list(tables or ())}

    def rows(query: str) -> Any:
        sql = query.format(only=only, **(DEFINED if definitions else NAMED_ONLY))
        return connection.execute(text(sql), params)

    catalog: Catalog = {}
    for table, column, type_, not_null, default in rows(COLUMNS):
        entry = catalog.setdefault(table, Table())
        entry.columns[column] = Column(type_, not_null, default)
        entry.column_order.append(column)
    for table, name, definition in rows(CONSTRAINTS):
        catalog[table].constraints[name] = _unqualified(definition, schema)
    for table, name, definition, valid in rows(INDEXES):
        # An INVALID index (a failed or still running CREATE INDEX CONCURRENTLY) has the same
        # definition as a good one but serves no query and checks no uniqueness.
        marker = "" if valid else " (INVALID: unusable, left by a failed concurrent build)"
        catalog[table].indexes[name] = _unqualified(definition, schema) + marker
    for table, name, definition in rows(TRIGGERS):
        catalog[table].triggers[name] = _unqualified(definition, schema)
    for table, option in rows(STORAGE_PARAMETERS):
        name, _, value = option.partition("=")
        catalog[table].storage_parameters[name] = value
    return catalog


def functions(connection: Connection, schema: str) -> dict[str, str]:
    """Every function of `schema` by signature, its definition as the server stores it, runs of
    whitespace collapsed (as alembic_utils compares them: indentation is not a change)."""
    return {
        signature: " ".join(definition.replace(f"FUNCTION {schema}.", "FUNCTION ", 1).split())
        for signature, definition in connection.execute(FUNCTIONS, {"schema": schema})
    }


def function_differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """One line per function of `expected` (ours) missing or defined otherwise in `actual`;
    the other functions of `actual` are someone else's."""
    return _compare("function", expected, {k: v for k, v in actual.items() if k in expected})


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

"""What depends on a column, as the catalog tells: what a type change or a rename carries from
the old column to the new one (its indexes, CHECKs, UNIQUE constraints, foreign keys either way
and a one-column primary key), and what it cannot.

A rewriting type change builds a shadow column and swaps the names at its cutover
(media_db/autogen/expand_contract.py). Whatever depends on the column would stay on the old
one, so each index (a UNIQUE constraint's too) is built again on the shadow, CONCURRENTLY under
a temporary name, and each CHECK and foreign key added again over it (NOT VALID, then VALIDATE),
before the cutover (media_db/autogen/carried.py); the cutover swaps their names (a UNIQUE
constraint is made over its new index), so the live column holds the names the models declare
at every step, and the old column's copies (named `<name>__old`) go with it at the contract. A
one-column primary key is made over the shadow's unique index at the cutover, under its own
name, a spare unique index over the old column taking it back on the way down; the foreign keys
referencing the key (or, for a type change, a UNIQUE column) follow it the same way
(media_db/autogen/keys.py). What
no copy can stand for (a composite primary key, an exclusion constraint, a view, a trigger
naming the column) is refused, named; so is a copy the new type cannot take, or a foreign key
whose columns cannot reference the new type, which the server is asked about at `make revision`
on a scratch copy of the table, so that the expand never fails on it.
"""

import re
from dataclasses import dataclass

from sqlalchemy import Connection, text

from media_db.transitions import literal, quote

INDEX, CHECK, UNIQUE, FOREIGN_KEY = "index", "check", "unique constraint", "foreign key"
PRIMARY_KEY, REFERENCING = "primary key", "foreign key referencing it"
# What a type change builds again over the new column; what a rename leaves on the old column
# until the contract drops it with the column (and its way down builds again).
RETYPE_CARRIES = RENAME_KEEPS = (INDEX, CHECK, UNIQUE, FOREIGN_KEY)

# Every object that depends on the column, besides its table, its default and PostgreSQL 18's
# NOT NULL constraint: (kind, name, definition, and a UNIQUE constraint's index definition).
# Indexes backing a constraint are the constraint's.
DEPENDENTS = text("""
    WITH col AS (
        SELECT a.attrelid AS rel, a.attnum AS num FROM pg_attribute a
        WHERE a.attrelid = to_regclass(:table) AND a.attname = :column
    )
    SELECT 'index', i.relname::text, pg_get_indexdef(i.oid), ''
    FROM col JOIN pg_index x ON x.indrelid = col.rel JOIN pg_class i ON i.oid = x.indexrelid
    WHERE EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = i.oid AND d.refobjid = col.rel AND d.refobjsubid = col.num)
      AND NOT EXISTS (SELECT FROM pg_constraint con
                      WHERE con.conindid = i.oid AND con.conrelid = col.rel)
    UNION ALL
    SELECT CASE WHEN con.contype = 'f' AND con.confrelid = col.rel
                     AND col.num = ANY(con.confkey) THEN 'foreign key referencing it'
                ELSE CASE con.contype WHEN 'c' THEN 'check' WHEN 'p' THEN 'primary key'
                     WHEN 'u' THEN 'unique constraint' WHEN 'f' THEN 'foreign key'
                     WHEN 'x' THEN 'exclusion constraint' ELSE 'constraint' END END,
           con.conname::text, pg_get_constraintdef(con.oid),
           CASE WHEN con.contype = 'u' THEN pg_get_indexdef(con.conindid) ELSE '' END
    FROM col JOIN pg_constraint con
      ON (con.conrelid = col.rel AND col.num = ANY(con.conkey))
      OR (con.confrelid = col.rel AND col.num = ANY(con.confkey))
    WHERE con.contype <> 'n'
    UNION ALL
    SELECT CASE WHEN d.classid = 'pg_rewrite'::regclass THEN 'view' ELSE 'trigger' END,
           coalesce(r.ev_class::regclass::text, t.tgname::text), '', ''
    FROM col JOIN pg_depend d ON d.refobjid = col.rel AND d.refobjsubid = col.num
    LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
    LEFT JOIN pg_trigger t ON d.classid = 'pg_trigger'::regclass AND t.oid = d.objid
    WHERE r.oid IS NOT NULL OR t.oid IS NOT NULL
    ORDER BY 1, 2
""")


@dataclass(frozen=True)
class Dependent:
    kind: str
    name: str
    definition: str  # pg_get_indexdef / pg_get_constraintdef, as the catalog gives it
    index: str = ""  # a UNIQUE constraint's index, as pg_get_indexdef gives it

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" + (f" ({self.definition})" if self.definition else "")

    def over(self, table: str, column: str, new_column: str, name: str) -> str:
        """The SQL that builds this index, CHECK, foreign key or UNIQUE constraint's index again
        over `new_column`, named `name`: an index CONCURRENTLY (IF NOT EXISTS: a re-run
        finishes), a constraint NOT VALID. A UNIQUE constraint then takes its index
        (`takes_name_sql`)."""
        if self.kind in (CHECK, FOREIGN_KEY):
            local, references, referenced = rebuildable(self.definition).partition(" REFERENCES ")
            definition = over_column(local, column, new_column) + references + referenced
            return (
                f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} "
                f"{definition.removesuffix(' NOT VALID')} NOT VALID"
            )
        match = INDEX_DEFINITION.fullmatch(
            over_column(rebuildable(self.index or self.definition), column, new_column)
        )
        assert match is not None, self.index or self.definition
        unique, method = match["unique"] or "", match["rest"]
        return (
            f"CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {quote(name)} "
            f"ON {quote(table)} {method}"
        )

    def renamed_sql(self, table: str, old: str, new: str) -> str:
        if self.kind == INDEX:
            return f"ALTER INDEX {quote(old)} RENAME TO {quote(new)}"
        return f"ALTER TABLE {quote(table)} RENAME CONSTRAINT {quote(old)} TO {quote(new)}"

    def takes_name_sql(self, table: str, copy: str, name: str) -> str:
        """The copy `over` built, named `copy`, becomes this object named `name`: renamed; a
        UNIQUE constraint made over its index (which takes the name), unless a re-run finds it
        made already."""
        if self.kind != UNIQUE:
            return self.renamed_sql(table, copy, name)
        options = UNIQUE_OPTIONS.fullmatch(self.definition)
        assert options is not None, self.definition
        add = (
            f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} UNIQUE USING INDEX "
            f"{quote(copy)}{options['rest']}"
        )
        return (
            "DO $unique$ BEGIN IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = "
            f"to_regclass({literal(quote(table))}) AND conname = {literal(name)}) THEN "
            f"{add}; END IF; END $unique$"
        )


INDEX_DEFINITION = re.compile(
    r"CREATE (?P<unique>UNIQUE )?INDEX .+? ON (?:ONLY )?\S+ (?P<rest>USING .+)", re.DOTALL
)
# A UNIQUE constraint's definition: what follows its columns (DEFERRABLE, INITIALLY ...).
UNIQUE_OPTIONS = re.compile(r"UNIQUE (?:NULLS NOT DISTINCT )?\(.*?\)(?P<rest>.*)", re.DOTALL)
# A string literal, a quoted identifier, or anything else (SQL's own lexical pieces, enough to
# tell a column's name from the same word inside a literal).
PIECES = re.compile(r"('(?:[^']|'')*')|(\"(?:[^\"]|\"\")*\")|([^'\"]+)")


# `(ARRAY['a'::character varying, ...])::text[]`: string constants of one type, cast as an array.
ARRAY_CAST = re.compile(
    r"\(ARRAY\[((?:'(?:[^']|'')*'::([a-z][a-z ]*)(?:, )?)+)\]\)::([a-z][a-z ]*)\[\]"
)


def rebuildable(definition: str) -> str:
    """`definition` (as the catalog prints it: pg_get_constraintdef, pg_get_indexdef, pg_dump)
    in a form that builds what it describes again. An IN list's array is printed as
    `(ARRAY['a'::character varying])::text[]`, which PostgreSQL reads back as
    `ARRAY[('a'::character varying)::text]` (a cast of an ARRAY[...] is pushed into its
    elements): a CHECK or partial index that `make verify` would call drift. A cast to the
    elements' own type in between keeps the array whole, as the IN list built it."""
    return ARRAY_CAST.sub(r"(ARRAY[\1]::\2[])::\3[]", definition)


def over_column(sql: str, column: str, new_column: str) -> str:
    """`sql` (a definition the catalog printed) with every mention of `column` naming
    `new_column` instead; string literals are left alone."""
    bare = re.compile(rf"(?<![\w$.]){re.escape(column)}(?![\w$])")
    out = []
    for string, quoted, other in PIECES.findall(sql):
        if string:
            out.append(string)
        elif quoted:
            out.append(quote(new_column) if quoted == f'"{column}"' else quoted)
        else:
            out.append(bare.sub(quote(new_column), other))
    return "".join(out)


def on_column(definition: str, column: str) -> bool:
    """Whether an index or constraint `definition` (as the catalog printed it) names `column` of
    its own table: a foreign key's referenced columns are another table's."""
    return mentions(definition.partition(" REFERENCES ")[0], column)


def mentions(sql: str, column: str) -> bool:
    """Whether `sql` (a definition the catalog printed) names `column`."""
    marker = "\x00"  # in no SQL text the catalog prints
    return over_column(sql, column, marker) != sql.replace(marker, "")


def dependents(connection: Connection, table: str, column: str) -> list[Dependent]:
    rows = connection.execute(DEPENDENTS, {"table": quote(table), "column": column})
    return [Dependent(*row) for row in rows]


# The foreign keys of other tables (and of this one) that reference `column` of `table`.
REFERENCES = text("""
    SELECT c.relname::text, con.conname::text, pg_get_constraintdef(con.oid)
    FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
    JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = ANY(con.confkey)
    WHERE con.contype = 'f' AND con.confrelid = to_regclass(:table) AND a.attname = :column
    ORDER BY 1, 2
""")
REFERENCED = re.compile(r"(?P<table>.+?)\((?P<columns>[^)]*)\)(?P<rest>.*)", re.DOTALL)


@dataclass(frozen=True)
class Reference:
    """A foreign key on `table` referencing the column being renamed."""

    table: str
    name: str
    definition: str  # pg_get_constraintdef

    @property
    def column(self) -> str:
        """Its own column(s), as the catalog prints them (`media_item_id`)."""
        return self.definition.partition("(")[2].partition(")")[0]

    def to(self, column: str, new_column: str, name: str) -> str:
        """This foreign key again, referencing `new_column` instead of `column`, named `name`,
        NOT VALID (VALIDATE follows, alone)."""
        local, _, referenced = self.definition.partition(" REFERENCES ")
        match = REFERENCED.fullmatch(referenced)
        assert match is not None, self.definition
        columns = over_column(match["columns"], column, new_column)
        rest = match["rest"].removesuffix(" NOT VALID")
        return (
            f"ALTER TABLE {quote(self.table)} ADD CONSTRAINT {quote(name)} {local} "
            f"REFERENCES {match['table']}({columns}){rest} NOT VALID"
        )

    def dropped_sql(self, name: str | None = None) -> str:
        return (
            f"ALTER TABLE {quote(self.table)} DROP CONSTRAINT IF EXISTS {quote(name or self.name)}"
        )

    def renamed_sql(self, old: str, new: str) -> str:
        return f"ALTER TABLE {quote(self.table)} RENAME CONSTRAINT {quote(old)} TO {quote(new)}"


def references(connection: Connection, table: str, column: str) -> list[Reference]:
    rows = connection.execute(REFERENCES, {"table": quote(table), "column": column})
    return [Reference(*row) for row in rows]

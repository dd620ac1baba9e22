"""`make squash UPTO=<revision>`: one baseline revision builds the schema as it stood at UPTO.

The schema is read from history, not from the models: the chain base..UPTO is applied to a
scratch database (created on the configured server, or the embedded one, and dropped after),
and `pg_dump --schema-only` reads it back. That database holds nothing but what the chain
built, so its whole schema is ours: functions, triggers, comments, storage parameters, CHECKs
as they stand (NOT VALID included), the migration history table. Only the version table is left
out: Alembic creates it before the first revision runs. The shared database is never read.

The baseline takes UPTO's own id and lists what it `replaces` (media_db/deploy/squashed.py says
why); the files it replaces move to alembic/versions_archive/. Run it once every deployed
database is at UPTO or past it (`make status` on each).
"""

import itertools
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from alembic import command
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, create_engine, pool
from sqlalchemy.exc import DBAPIError

from media_db import dependents, settings
from media_db.deploy import history_shape, project, squashed
from media_db.dev.embedded import client
from media_db.dev.rebase import FILE_NAME
from media_db.models import SCHEMA
from media_db.pool import conninfo

# pg_dump's settings for the session that restores it: ours has its own.
SESSION_SETTINGS = re.compile(r"^(SET \w+ = |SELECT pg_catalog\.set_config\()", re.I)
OUR_SCHEMA_ITSELF = re.compile(rf"^(CREATE SCHEMA|COMMENT ON SCHEMA) {SCHEMA}\b", re.I)
COLUMN_OPTIONS = re.compile(r"^(ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET )\((.*)\)$", re.S)
# This machine's PostgreSQL 15 stamps every column it creates with a `pg_attver` option of its
# own (measured: in pg_attribute.attoptions of every table, catalogs included); the server
# assigns it, no revision does, and a stock server refuses the name.
SERVER_ASSIGNED_OPTIONS = ("pg_attver=",)

BASELINE = '''"""Baseline: the schema as revisions {first} to {upto} built it, in one step.

Why: a new database runs this instead of the {count} revisions it replaces; they are archived in
alembic/{archive}/ (Alembic does not load them; `make status` still checks their checksums).
Written by `make squash UPTO={upto}` from a scratch database upgraded to {upto}
(pg_dump --schema-only), not from the models. It has {upto}'s own id: a database at {upto} or
past it never runs it, and needs no stamp.

Locks: new tables only (a database that runs it has none of ours yet).

Revision ID: {upto}
Revises:
Create Date: {created}
"""

# ruff: noqa: E501 - the SQL is pg_dump's, line for line

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = "{upto}"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The revisions this one stands for (media_db/deploy/squashed.py).
replaces: tuple[str, ...] = {replaces}

# squawk (`make lint-sql`) on pg_dump's forms, every table being new in this step.
lint_waivers = {{
    "upgrade": {{
        "ban-alter-identity": "pg_dump adds a column's identity after creating its table, in "
        "this same step: no client has used it yet",
    }},
}}

# What base..{upto} built, in pg_dump's order (functions first, foreign keys last).
STATEMENTS: tuple[str, ...] = (
{statements}
)


def upgrade() -> None:
    # pg_dump creates functions before the tables their bodies may name.
    op.execute("SET LOCAL check_function_bodies = false")
    for statement in STATEMENTS:
        # DDL, not text(): a colon in the SQL is no bind parameter; only % is escaped.
        op.execute(sa.DDL(statement.replace("%", "%%")))  # type: ignore[no-untyped-call]


def downgrade() -> None:
    raise CommandError({refusal!r})
'''


class Refused(SystemExit):
    """One line saying what is wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(f"make squash: {message}")


def chain_to(script: ScriptDirectory, upto: str) -> list[Script]:
    """The revisions base..upto, oldest first."""
    if problems := history_shape.problems(script):
        raise Refused(problems[0])
    try:
        target = script.get_revision(upto)
    except CommandError as error:
        raise Refused(f"UPTO={upto}: {error}; `make history` lists the revisions") from None
    if target is None:
        raise Refused(f"UPTO={upto} is not a revision: `make history` lists them")
    chain = [found for found in script.iterate_revisions(target.revision, "base") if found]
    chain.reverse()
    if len(chain) == 1 and squashed.replaces(chain[0]):
        raise Refused(f"{target.revision} is already the baseline: nothing to squash")
    return chain


@contextmanager
def scratch_database(server: URL) -> Iterator[URL]:
    """A new, empty database on `server` (from template0: nothing a DBA added to template1),
    dropped afterwards whatever happens."""
    name = f"media_db_squash_{secrets.token_hex(4)}"
    admin = create_engine(server, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def upgrade(url: URL, revision: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        config = project.alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def pg_dump(url: URL) -> str:
    """`pg_dump --schema-only` of our schema but the version table, as text; the password in
    the environment, never on the command line."""
    passwordless = URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    arguments = [
        str(client("pg_dump")),  # the wheel's 18: dumps any older server
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--no-tablespaces",
        f"--schema={SCHEMA}",
        f"--exclude-table={SCHEMA}.{project.VERSION_TABLE}",
        f"--dbname={conninfo(passwordless)}",
    ]
    done = subprocess.run(arguments, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise Refused(f"pg_dump failed: {' '.join(done.stderr.split())}")
    return done.stdout


def split(sql: str) -> Iterator[str]:
    """The statements of pg_dump's output, without its comments and psql meta-commands; a `;`
    inside quotes, dollar quotes or a comment does not end one."""
    statement, i, quote = "", 0, None
    while i < len(sql):
        if quote is not None:  # inside '...', "..." or $tag$...$tag$
            end = sql.find(quote, i)
            end = len(sql) if end < 0 else end + len(quote)
            statement, i, quote = statement + sql[i:end], end, None
            continue
        char = sql[i]
        if not statement.strip() and char == "\\":  # a meta-command: its line
            i = _line_end(sql, i)
            continue
        if sql.startswith("--", i):
            i = _line_end(sql, i)
            continue
        if char in "'\"":
            quote, statement, i = char, statement + char, i + 1
            continue
        if char == "$" and (tag := re.match(r"\$([A-Za-z_]\w*)?\$", sql[i:])):
            quote, statement, i = tag[0], statement + tag[0], i + len(tag[0])
            continue
        if char == ";":
            yield statement.strip()
            statement, i = "", i + 1
            continue
        statement, i = statement + char, i + 1
    if statement.strip():
        yield statement.strip()


def _line_end(sql: str, i: int) -> int:
    end = sql.find("\n", i)
    return len(sql) if end < 0 else end + 1


def ours(statements: Iterator[str]) -> list[str]:
    """The statements that build what the chain built: not pg_dump's session settings, not
    our schema itself (it exists wherever a database does), not server-assigned options."""
    kept = []
    for statement in statements:
        if SESSION_SETTINGS.match(statement) or OUR_SCHEMA_ITSELF.match(statement):
            continue
        if options := COLUMN_OPTIONS.match(statement):
            chosen = [
                option
                for option in options[2].split(", ")
                if not option.startswith(SERVER_ASSIGNED_OPTIONS)
            ]
            if not chosen:
                continue
            statement = f"{options[1]}({', '.join(chosen)})"
        kept.append(statement)
    return kept


def schema_at(server: URL, revision: str) -> list[str]:
    """The statements that build the schema base..revision built, read from a scratch database,
    and proven on a second one: what they build dumps the same, else nothing is written."""
    with scratch_database(server) as scratch:
        upgrade(scratch, revision)
        built = ours(split(pg_dump(scratch)))
    statements = [dependents.rebuildable(statement) for statement in built]
    with scratch_database(server) as scratch:
        # psycopg itself, with no parameters: a % or a colon in the SQL is only text.
        with psycopg.connect(conninfo(scratch)) as connection:
            connection.execute("SET LOCAL check_function_bodies = false")
            for statement in statements:
                connection.execute(statement)
        rebuilt = ours(split(pg_dump(scratch)))
    for was, now in itertools.zip_longest(built, rebuilt, fillvalue=""):
        if was != now:
            raise Refused(
                f"the baseline would not build the same schema (from base..{revision}: "
                f"{' '.join(was.split())[:300]!r}; from the baseline: "
                f"{' '.join(now.split())[:300]!r}); nothing was written"
            )
    return statements


def literal(statement: str) -> str:
    """`statement` as a Python string literal, readable when it can be."""
    if '"""' in statement or statement.endswith(("\\", '"')):
        return repr(statement)
    return f'r"""{statement}"""'


def write_baseline(chain: list[Script], statements: list[str], archive: Path) -> Path:
    upto, first = chain[-1], chain[0]
    replaced = tuple(dict.fromkeys([*squashed.replaces(first), *(s.revision for s in chain)]))
    name = FILE_NAME.fullmatch(Path(upto.path).name)
    prefix = name[1] if name else f"{datetime.now(UTC):%Y_%m_%d}_"
    target = Path(upto.path).with_name(f"{prefix}{upto.revision}_baseline.py")
    refusal = squashed.BELOW_BASELINE.format(
        revision=upto.revision, first=replaced[0], archive=squashed.ARCHIVE
    )
    text = BASELINE.format(
        first=replaced[0],
        upto=upto.revision,
        count=len(replaced),
        archive=squashed.ARCHIVE,
        created=f"{datetime.now(UTC):%Y-%m-%d}",
        replaces=repr(replaced),
        statements="\n".join(f"    {literal(statement)}," for statement in statements),
        refusal=refusal,
    )
    archive.mkdir(exist_ok=True)
    for script in chain:
        moved = archive / Path(script.path).name
        if moved.exists():
            raise Refused(f"{moved} is already archived: move it away first")
    for script in chain:
        Path(script.path).rename(archive / Path(script.path).name)
    target.write_text(text)
    ruff = Path(sys.executable).parent / "ruff"
    subprocess.run([str(ruff), "format", "--quiet", str(target)], check=True)
    return target


def main(argv: list[str]) -> int:
    upto = argv[1] if len(argv) > 1 else ""
    if not upto:
        raise Refused("usage: make squash UPTO=<revision> (e.g. UPTO=0005; `make history`)")
    script = ScriptDirectory.from_config(project.alembic_config())
    chain = chain_to(script, upto)
    server = settings.direct_url()
    where = settings.redacted(server)
    print(f"Applying base..{chain[-1].revision} to a scratch database on {where}")
    try:
        statements = schema_at(server, chain[-1].revision)
    except CommandError as error:  # a revision of the chain failed: Alembic's one line
        raise Refused(f"applying base..{chain[-1].revision} failed: {error}") from None
    except DBAPIError as error:
        cause = " ".join(str(error.orig or error).split())
        raise Refused(
            f"the scratch database on {where} failed: {cause} (its role needs CREATEDB, or "
            "point DATABASE_URL at a server where it has it)"
        ) from None
    target = write_baseline(chain, statements, squashed.archive_folder())
    print(
        f"Wrote {target.relative_to(project.folder())}: {len(statements)} statements, replacing "
        f"{', '.join(s.revision for s in chain)} (moved to alembic/{squashed.ARCHIVE}/). "
        "Commit both; deploy it only where every database is at "
        f"{chain[-1].revision} or past it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""What alembic/env.py needs beyond Alembic itself, kept here so env.py stays a page long.

The database is shared with n8n (about 40 tables with generic names), so autogenerate must see
our tables only, and our version table must not be Alembic's default `alembic_version`.
"""

import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal

import psycopg
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.ddl.postgresql import PostgresqlImpl
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.replaceable_entity import ReplaceableEntity, register_entities, registry
from sqlalchemy import Column, Connection, Engine, MetaData
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeDecorator

from media_db import settings, transitions
from media_db.connect import DatabaseUnavailable, open_connection
from media_db.deploy import pooler, project, storage_parameters

# What an expand/contract in flight may leave on our table that the models do not declare.
HIDEABLE = (
    "column",
    "index",
    "check_constraint",
    "unique_constraint",
    "foreign_key_constraint",
)
AUTOGENERATE_PLUGINS = [
    "alembic.autogenerate.*",
    "alembic.ext.checkconstraint_byname",
    storage_parameters.PLUGIN,
]


log = logging.getLogger(__name__)


@contextmanager
def migration_connection(
    given: Engine | Connection | None, settings_sql: list[str]
) -> Iterator[Connection]:
    """The connection to migrate with, its session timeouts set (and reset afterwards): the one
    pytest-alembic (or a caller) put in `config.attributes["connection"]`, an Engine or a
    Connection, else one from the settings."""
    if isinstance(given, Connection):
        connection_scope: AbstractContextManager[Connection] = nullcontext(given)
    else:
        connection_scope = given.connect() if given is not None else connect()
    with connection_scope as connection:
        # Alembic runs its own transactions (one per revision, and autocommit blocks for
        # CREATE INDEX CONCURRENTLY): work the caller left open is committed first.
        if connection.in_transaction():
            connection.commit()
        pooler.refuse_transaction_pooler(connection)  # before any SET could leak to the pool
        for statement in settings_sql:
            connection.exec_driver_sql(statement)
        connection.commit()  # session-level settings outlive it; Alembic starts clean
        try:
            yield connection
        finally:
            # After the server went away (a failover, a restart) there is no session left to
            # reset, and the error already on its way says what happened.
            if not connection.invalidated:
                try:
                    if connection.in_transaction():
                        connection.rollback()
                    connection.exec_driver_sql("RESET lock_timeout; RESET statement_timeout")
                    connection.commit()
                except DBAPIError as error:
                    if not isinstance(error.orig, psycopg.OperationalError):
                        raise


def connect() -> Connection:
    try:
        connection = open_connection("migrations")
    except DatabaseUnavailable as error:
        raise CommandError(str(error)) from None  # Alembic prints it as one FAILED: line
    log.info("Database: %s", settings.redacted(connection.engine.url))
    return connection


def require_server_version(connection: Connection) -> None:
    version = connection.dialect.server_version_info or ()
    if version < (project.OLDEST_MAJOR,):
        shown = ".".join(str(part) for part in version)
        raise CommandError(
            f"PostgreSQL {project.OLDEST_MAJOR} or newer is required (gen_random_uuid() is core "
            f"from 13); this server is {shown}. Nothing was changed."
        )


# The inner functions Alembic's commands hand to env.py (alembic/command.py): the only place
# that says which command runs when Alembic is called from Python rather than the CLI.
CHANGING_COMMANDS = {"upgrade", "downgrade", "stamp"}
COMMAND_FUNCTIONS = {"upgrade": "upgrade", "downgrade": "downgrade", "do_stamp": "stamp"}


def running_command(migration_context: MigrationContext) -> str:
    function = migration_context.opts.get("fn")
    return COMMAND_FUNCTIONS.get(getattr(function, "__name__", ""), "other")


def planned_steps(migration_context: MigrationContext) -> list[Any]:
    """What `run_migrations` is about to do, computed the way it does (no side effects for
    upgrade, downgrade and stamp)."""
    function = migration_context.opts["fn"]
    return list(function(migration_context.get_current_heads(), migration_context))


# Alembic's messages, and what a person can do about them (the Makefile's verbs).
ACTIONS = {
    "Can't locate revision identified by": "`make history` lists the revisions; REV also takes "
    "-1 (one back) and base",
    "Target database is not up to date.": "the database is behind head: run `make upgrade` first "
    "(`make status` shows what is pending)",
}


@contextmanager
def actionable_errors() -> Iterator[None]:
    """Alembic's errors that leave the reader asking "so what do I do?", with the answer."""
    try:
        yield
    except CommandError as error:
        message = str(error)
        for start, action in ACTIONS.items():
            if message.startswith(start):
                raise CommandError(f"{message.rstrip('.')}: {action}.") from None
        raise


def describe(current: tuple[str, ...], script: ScriptDirectory) -> str:
    if not current:
        return "base (none of our revisions applied)"
    at_head = set(current) == set(script.get_heads())
    return ", ".join(current) + (" (head)" if at_head else "")


def scoped_to(
    metadata: MetaData, entities: list[ReplaceableEntity], schema: str, *, with_entities: bool
) -> dict[str, Any]:
    """Autogenerate options that keep every table outside `metadata` invisible, and every
    function and trigger that is not ours: ours are those in `entities` and the triggers on our
    tables, in `schema`.

    alembic_utils compares the entities of a process-wide registry, from a comparator it
    installs when imported: registering them here puts them in autogenerate's scope. It learns
    how the server stores an entity by building it in a rolled-back savepoint (DROP FUNCTION
    ... CASCADE, CREATE TRIGGER), which queues an ACCESS EXCLUSIVE request on media_items
    behind every open writer, stalling n8n's writes queued behind it (11 s measured behind an
    open transaction). So only `make revision` (`with_entities`) compares them; `alembic check`
    and `make verify` compare tables here, and functions and triggers through verify's catalog
    comparison, which builds them in a scratch schema and locks nothing of ours."""
    registry.clear()  # type: ignore[no-untyped-call]
    if with_entities:
        register_entities(
            entities,
            # Looked at even with no entity declared in it, so that removing the last is seen.
            schemas=[schema],
            entity_types={PGFunction, PGTrigger, *map(type, entities)},
        )
    declared = {entity.identity for entity in entities}

    def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
        if type_ == "schema":
            return name is None  # the default schema only
        if type_ == "table":
            return name in metadata.tables
        return True

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if isinstance(obj, ReplaceableEntity):
            # A trigger on our table is ours, declared or not: one added by hand is drift.
            table = obj.on_entity.partition(".")[2] if isinstance(obj, PGTrigger) else ""
            on_ours = table in metadata.tables
            if on_ours and transitions.hidden(metadata, table, obj.signature):
                return False  # an expand/contract's sync trigger, until its marker goes
            return with_entities and (obj.identity in declared or on_ours)
        if type_ == "foreign_key_constraint" and reflected:
            # A foreign key referencing a renamed key's old name stays until the contract (its
            # copy over the new name stands for the model's meanwhile).
            referred = [e.target_fullname.split(".")[-2:] for e in obj.elements]
            if any(transitions.hidden(metadata, t, c) for t, c in referred):
                return False
        if type_ in HIDEABLE and reflected and compare_to is None and name is not None:
            # A rename's or a type change's old column, and the indexes and constraints left on
            # it, stay until the models drop the marker: not a drop.
            table = obj.table.name
            columns = [] if type_ in ("column", "check_constraint") else obj.columns
            on = [column.name for column in columns]
            return not any(transitions.hidden(metadata, table, n) for n in [name, *on])
        # Belt and braces for tables reflected by other means (e.g. a foreign key target).
        return not (type_ == "table" and reflected and name not in metadata.tables)

    return {
        "target_metadata": metadata,
        "include_name": include_name,
        "include_object": include_object,
        "include_schemas": False,  # alembic_utils' comparator needs it present (KeyError)
        "compare_type": True,
        "compare_server_default": True,  # by ComparingImpl
        # CHECK constraints are invisible to autogenerate without Alembic's own plugin (it
        # matches them by name: our naming convention names every one); table storage
        # parameters (per-table autovacuum settings) without ours.
        "autogenerate_plugins": AUTOGENERATE_PLUGINS,
        "render_item": render_plain_type,
        "process_revision_directives": write_lock_safe_revision,
    }


class ComparingImpl(PostgresqlImpl):
    """Alembic's PostgreSQL implementation (it replaces it: Alembic registers impls by dialect),
    but a server default comparison the server cannot make counts as a difference: when a type
    change carries its default (text '0' to integer 0), Alembic's own comparison asks the
    server `'0' = 0` and aborted `make revision` (`operator does not exist: text = integer`).
    A savepoint keeps the failed comparison from aborting the rest."""

    __dialect__ = "postgresql"

    def compare_server_default(
        self,
        inspector_column: Column[Any],
        metadata_column: Column[Any],
        rendered_metadata_default: str | None,
        rendered_inspector_default: str | None,
    ) -> bool:
        assert self.connection is not None
        try:
            with self.connection.begin_nested():
                return bool(
                    super().compare_server_default(  # type: ignore[no-untyped-call]
                        inspector_column,
                        metadata_column,
                        rendered_metadata_default,
                        rendered_inspector_default,
                    )
                )
        except DBAPIError:
            return True


def render_plain_type(
    type_: str, obj: Any, autogen_context: AutogenContext
) -> str | Literal[False]:
    """Render our TypeDecorators as their SQL type: revisions must not import application code."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    return False


def write_lock_safe_revision(
    context: MigrationContext, revision: Any, directives: list[MigrationScript]
) -> None:
    """An autogenerated revision that would be empty is refused; revisions are numbered
    0001, 0002... (an explicit --rev-id wins), hand-written ones too (`revision_environment`
    in alembic.ini brings them here); each autogenerated operation is written in its lock-safe
    form (media_db/autogen/rewriter.py). `alembic check` passes through here too and must be
    left alone: it reads the (empty) script to decide that nothing changed."""
    script = directives[0]
    config = context.config
    if config is None or not _is_revision_command(config, script):
        return
    if _autogenerating(context) and script.upgrade_ops and script.upgrade_ops.is_empty():
        raise CommandError(
            "Autogenerate found no difference between the models and the database: "
            "no revision written."
        )
    if not getattr(config.cmd_opts, "rev_id", None):
        heads = ScriptDirectory.from_config(config).get_heads()
        script.rev_id = f"{max((int(h) for h in heads if h.isdigit()), default=0) + 1:04d}"
    if script.upgrade_ops is not None and context.connection is not None:
        # The revision writer loads here only: `alembic upgrade` never needs it.
        from media_db.autogen import rewriter

        metadata = context.opts.get("target_metadata")
        context.opts["template_args"].update(rewriter.rewrite(script, context.connection, metadata))


# The commands that write a revision file (`make revision` is the first).
WRITING_COMMANDS = {"revision", "merge"}


def writes_revision(config: Config) -> bool:
    """Whether this run writes a revision (`alembic revision`, `merge`) from the command line."""
    command = getattr(config.cmd_opts, "cmd", None)  # absent when called from Python
    return command is not None and command[0].__name__ in WRITING_COMMANDS


def writes_hand_written_revision(config: Config, environment_options: Mapping[str, Any]) -> bool:
    """`alembic revision` without --autogenerate (from the command line or from Python), or
    `alembic merge`: env.py runs (revision_environment) only to number the former (Alembic never
    hands a merge to process_revision_directives) and compares nothing, so neither needs a
    database."""
    if config.cmd_opts is None:  # command.revision() from Python: its RevisionContext says
        revision_context = environment_options.get("revision_context")
        return revision_context is not None and not revision_context.command_args["autogenerate"]
    return writes_revision(config) and not getattr(config.cmd_opts, "autogenerate", False)


def lists_history_only(config: Config) -> bool:
    """`alembic history` without -i (which shows the current revision) from the command line."""
    command = getattr(config.cmd_opts, "cmd", None)
    return (
        command is not None
        and command[0].__name__ == "history"
        and not getattr(config.cmd_opts, "indicate_current", False)
    )


def _autogenerating(context: MigrationContext) -> bool:
    # Alembic documents cmd_opts.autogenerate; command.revision() called from Python has no
    # cmd_opts, and its RevisionContext (in the environment's options) holds the same flag.
    config = context.config
    if config is not None and config.cmd_opts is not None:
        return bool(getattr(config.cmd_opts, "autogenerate", False))
    revision_context = context.opts.get("revision_context")
    return bool(revision_context is not None and revision_context.command_args["autogenerate"])


def _is_revision_command(config: Config, script: MigrationScript) -> bool:
    if config.cmd_opts is not None:  # the CLI says which command runs
        return bool(config.cmd_opts.cmd[0].__name__ in WRITING_COMMANDS)
    return script.message is not None  # command.check() never sets a message

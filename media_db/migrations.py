"""What alembic/env.py needs beyond Alembic itself, kept here so env.py stays a page long.

The database is shared with n8n (about 40 tables with generic names), so autogenerate must see
our tables only, and our version table must not be Alembic's default `alembic_version`.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, MetaData
from sqlalchemy.types import TypeDecorator

from media_db import settings
from media_db.connect import DatabaseUnavailable, open_connection

VERSION_TABLE = "media_analysis_alembic_version"
MINIMUM_SERVER = (13,)  # gen_random_uuid() is core from PostgreSQL 13


log = logging.getLogger("alembic.env")


@contextmanager
def migration_connection(given: Engine | Connection | None) -> Iterator[Connection]:
    """The connection to migrate with: the one pytest-alembic (or a caller) put in
    `config.attributes["connection"]`, an Engine or a Connection, else one from the settings."""
    if isinstance(given, Connection):
        yield given
        return
    with given.connect() if given is not None else connect() as connection:
        yield connection


def connect() -> Connection:
    try:
        connection = open_connection("migrations")
    except DatabaseUnavailable as error:
        raise CommandError(str(error)) from None  # Alembic prints it as one FAILED: line
    log.info("Database: %s", settings.redacted(connection.engine.url))
    return connection


def require_server_version(connection: Connection) -> None:
    version = connection.dialect.server_version_info or ()
    if version < MINIMUM_SERVER:
        shown = ".".join(str(part) for part in version)
        raise CommandError(
            f"PostgreSQL {MINIMUM_SERVER[0]} or newer is required (gen_random_uuid() is core "
            f"from 13); this server is {shown}. Nothing was changed."
        )


def scoped_to(metadata: MetaData) -> dict[str, Any]:
    """Autogenerate options that keep every table outside `metadata` invisible."""

    def include_name(
        name: str | None, type_: str, parent_names: dict[str, str | None]
    ) -> bool:
        if type_ == "schema":
            return name is None  # the default schema only
        if type_ == "table":
            return name in metadata.tables
        return True

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        # Belt and braces for tables reflected by other means (e.g. a foreign key target).
        return not (type_ == "table" and reflected and name not in metadata.tables)

    return {
        "target_metadata": metadata,
        "include_name": include_name,
        "include_object": include_object,
        "include_schemas": False,
        "compare_type": True,
        "compare_server_default": True,
        "render_item": render_plain_type,
        "process_revision_directives": refuse_empty_and_number,
    }


def render_plain_type(
    type_: str, obj: Any, autogen_context: AutogenContext
) -> str | Literal[False]:
    """Render our TypeDecorators as their SQL type: revisions must not import application code."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    return False


def refuse_empty_and_number(
    context: MigrationContext, revision: Any, directives: list[MigrationScript]
) -> None:
    """An autogenerate that finds nothing writes nothing; revisions are numbered 0001, 0002..."""
    script = directives[0]
    config = context.config
    if config is not None and getattr(config.cmd_opts, "autogenerate", False):
        if script.upgrade_ops is not None and script.upgrade_ops.is_empty():
            directives[:] = []
            raise CommandError(
                "Autogenerate found no difference between the models and the database: "
                "no revision written."
            )
    if config is not None and not getattr(config.cmd_opts, "rev_id", None):
        heads = ScriptDirectory.from_config(config).get_heads()
        numbers = [int(head) for head in heads if head.isdigit()]
        script.rev_id = f"{max(numbers, default=0) + 1:04d}"

"""Alembic environment: our tables only, our own version table, the URL from media_db.settings."""

import logging
import os
from logging.config import fileConfig

from alembic import context

from media_db import migrations
from models import Base

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
log = logging.getLogger("alembic.env")

options = {
    **migrations.scoped_to(Base.metadata),
    "version_table": migrations.VERSION_TABLE,
    # One transaction per revision: a revision failing half-way leaves the previous one intact.
    "transaction_per_migration": True,
}


timeouts = migrations.timeout_settings(context.get_x_argument(as_dictionary=True), os.environ)


def run_offline() -> None:
    # No URL at all: offline SQL needs only the dialect, and can never leak a password.
    context.configure(dialect_name="postgresql", literal_binds=True, **options)
    with context.begin_transaction():
        for statement in timeouts:
            context.execute(statement)
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    with migrations.migration_connection(given, timeouts) as connection:
        migrations.require_server_version(connection)
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        reached = context.get_context().get_current_heads()
        log.info("Database at revision %s", migrations.describe(reached, context.script))


if context.is_offline_mode():
    run_offline()
else:
    run_online()

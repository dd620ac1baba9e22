"""Alembic environment: our tables only, our own version table, the URL from media_db.settings."""

import logging
import os
from contextlib import nullcontext
from logging.config import fileConfig

from alembic import context

from media_db.deploy import (
    backup,
    data_loss,
    environment,
    failures,
    history,
    lock,
    options,
    progress,
    project,
    retries,
    squashed,
    throttle,
)
from media_db.models import ENTITIES, SCHEMA, Base

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
log = logging.getLogger("alembic.env")

# Every option is checked first, offline runs included: a bad one stops the command here.
x_arguments = context.get_x_argument(as_dictionary=True)
guard = options.options(x_arguments, os.environ)
timeouts = options.timeout_settings(x_arguments, os.environ)
recorder = history.Recorder(timeouts)  # every step, in media_analysis_migration_history
left_behind = failures.LeftBehind(context.script, x_arguments)  # what a failure left behind
migration_options = {
    # Functions and triggers: compared by `make revision` only (see scoped_to: the comparison
    # locks media_items); `make verify` checks them without a lock.
    **environment.scoped_to(
        Base.metadata, ENTITIES, SCHEMA, with_entities=environment.writes_revision(config)
    ),
    "version_table": project.VERSION_TABLE,
    # One transaction per revision: a revision failing half-way leaves the previous one intact.
    "transaction_per_migration": True,
    "on_version_apply": [left_behind.applied, recorder.on_version_apply],
    # Read by our drop_table/drop_column (media_db/deploy/data_loss.py), under the drop's lock.
    data_loss.CONSENT_OPTION: guard["allow_data_loss"],
    data_loss.BACKUP_OPTION: (
        None if guard["backup"] == "skip" else backup.Run(guard["backup_dir"])
    ),
    data_loss.STEP_OPTION: recorder.current,
}


def run_offline() -> None:
    # No URL at all: offline SQL needs only the dialect, and can never leak a password.
    context.configure(dialect_name="postgresql", literal_binds=True, **migration_options)
    with context.begin_transaction():
        for statement in [*timeouts, history.offline_start()]:
            context.execute(statement)
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    with environment.migration_connection(given, timeouts) as connection:
        environment.require_server_version(connection)
        context.configure(connection=connection, **migration_options)
        command = environment.running_command(context.get_context())
        changing = command in environment.CHANGING_COMMANDS
        if changing:
            # Before anything plans from the revision the database is at.
            migration = context.get_context()
            squashed.refuse_replaced_current(migration.get_current_heads(), context.script)
            left_behind.prepare(migration, command)
        # Only commands that change the database queue for the lock; `current` and `check`
        # read. The plan is computed after the lock, from the revision the database is at then.
        with (
            failures.reported(left_behind, connection.engine, guard["debug"])
            if changing
            else nullcontext(),
            lock.migration_lock(connection, project.VERSION_TABLE, guard["lock_wait"])
            if changing
            else nullcontext(),
        ):
            if command in ("upgrade", "downgrade"):
                steps = environment.planned_steps(context.get_context())
                squashed.refuse_going_below(steps)
                data_loss.refuse_data_loss(
                    connection,
                    steps,
                    guard["allow_data_loss"],
                    migration_options[data_loss.BACKUP_OPTION],
                )
            reporter = progress.Reporter(
                connection, context.script, recorder.current, guard["progress_interval"]
            )
            pace = throttle.Throttle(
                connection,
                guard["backfill_batch"],
                guard["backfill_pause"],
                guard["max_replica_lag"],
                guard["replica_lag_wait"],
            )
            with reporter.running(), pace.applied():
                retries.run_with_retries(
                    connection, run_migrations, guard["retries"], guard["backoff"]
                )
        if changing:  # `current` prints the revision itself
            reached = context.get_context().get_current_heads()
            log.info("Database at revision %s", environment.describe(reached, context.script))


def run_migrations() -> None:
    with recorder.recording(context.get_context()), context.begin_transaction():
        left_behind.begin()
        context.run_migrations()


def number_hand_written_revision() -> None:
    # Only process_revision_directives runs (no steps): no database, no SQL printed, and none
    # of the "Generating static SQL" lines that offline mode logs.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    context.configure(dialect_name="postgresql", as_sql=True, **migration_options)
    context.run_migrations()


def list_history() -> None:
    # revision_environment runs env.py for `alembic history` too; without -i it reads nothing
    # of the database: list the revisions as if none were applied (and say nothing else).
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    context.configure(dialect_name="postgresql")
    migration = context.get_context()
    migration.opts["fn"]((), migration)


with environment.actionable_errors():
    # The EnvironmentContext's own options (Alembic's module proxy shows its methods only).
    environment_options = getattr(context, "_proxy").context_opts  # noqa: B009
    if environment.writes_hand_written_revision(config, environment_options):
        number_hand_written_revision()
    elif environment.lists_history_only(config):
        list_history()
    elif context.is_offline_mode():
        run_offline()
    else:
        run_online()

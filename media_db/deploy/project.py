"""The project a deploy runs in, and the facts every deploy tool shares, each stated once: our
tables, our version table, the oldest supported major, where alembic.ini is and how a Config is
built from it, what an offline run prints, and which revision the database is at."""

import io
import os
from importlib import metadata
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from media_db.models import Base

DISTRIBUTION = "media-analysis-db"
# Not Alembic's default `alembic_version`: the database is shared with n8n.
VERSION_TABLE = "media_analysis_alembic_version"
OUR_TABLES = tuple(Base.metadata.tables)
OLDEST_MAJOR = 13  # gen_random_uuid() is core from PostgreSQL 13
# `make test-matrix` proves each (docs/deploy.md: supported majors). 14 is not among them: no
# Debian release here packages it and no wheel carries it.
TESTED_MAJORS = (OLDEST_MAJOR, 15, 16, 17, 18)
# A checkout (or an editable install) has alembic.ini two folders above this file; a wheel in
# site-packages does not, and finds it in the current folder as the alembic command does.
_CHECKOUT = Path(__file__).resolve().parents[2]


class ProjectNotFound(SystemExit):
    """No alembic.ini where a deploy tool looks: the message says where to run it from."""


def alembic_ini() -> Path:
    """$ALEMBIC_CONFIG (as the alembic command reads it), else the checkout's, else the current
    folder's."""
    if given := os.environ.get("ALEMBIC_CONFIG"):
        return Path(given).resolve()
    for folder in (_CHECKOUT, Path.cwd()):
        if (folder / "alembic.ini").is_file():
            return folder / "alembic.ini"
    raise ProjectNotFound(
        f"No alembic.ini in {Path.cwd()}: run this from the project folder (the one with "
        "alembic.ini and alembic/), or set ALEMBIC_CONFIG to its alembic.ini."
    )


def folder() -> Path:
    """The project folder: relative paths of deploy options are read from here."""
    return alembic_ini().parent


def alembic_config(**kwargs: object) -> Config:
    """The Alembic Config of this project, for tools that call Alembic from Python."""
    return Config(str(alembic_ini()), **kwargs)  # type: ignore[arg-type]


def offline_sql(direction: str, span: str) -> str:
    """What `alembic <direction> <span> --sql` prints (no database needed)."""
    buffer = io.StringIO()
    config = alembic_config(output_buffer=buffer)
    config.attributes["skip_logging_config"] = True
    getattr(command, direction)(config, span, sql=True)
    return buffer.getvalue()


def current_heads(connection: Connection) -> tuple[str, ...]:
    """The revisions our version table says are applied (empty: none, or no version table)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return tuple(context.get_current_heads())


def version() -> str:
    """The installed package's version (a wheel's, or the checkout's editable install)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"

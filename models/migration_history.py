"""The deploy audit trail: one row per upgrade, downgrade or stamp step (written by
media_db/deploy/history.py).

Declared here, with the application's tables, so that `make revision` wrote its revision,
`make verify` compares it like any table of ours and autogenerate, which sees only what these
models declare, can never propose dropping it. The API never reads or writes it.

`info[SURVIVES_DOWNGRADE]` tells `make revision` that going back below the revision that creates
it keeps it (media_db/autogen/rewriter.py): the record of a `downgrade base` must outlive it.
"""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Identity, String, Text, text
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base

SURVIVES_DOWNGRADE = "survives_downgrade"
DIRECTIONS = ("upgrade", "downgrade", "stamp")
OUTCOMES = ("succeeded", "failed")
MODES = ("online", "offline")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class MigrationHistory(Base):
    __tablename__ = "media_analysis_migration_history"
    __table_args__ = (
        CheckConstraint(_one_of("direction", DIRECTIONS), name="direction"),
        CheckConstraint(_one_of("outcome", OUTCOMES), name="outcome"),
        CheckConstraint(_one_of("mode", MODES), name="mode"),
        {
            "info": {
                SURVIVES_DOWNGRADE: "the audit trail outlives a downgrade, which it records; "
                "like Alembic's version table, it is never dropped"
            }
        },
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    revision: Mapped[str] = mapped_column(String(32))  # 'base' for a stamp to base
    direction: Mapped[str] = mapped_column(String(10))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    duration_ms: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(10))
    error: Mapped[str | None] = mapped_column(Text)
    database_role: Mapped[str] = mapped_column(Text, server_default=text("CURRENT_USER"))
    # The machine that ran alembic (NULL for an offline script: made on one machine, applied
    # from another); client_addr is the address the server saw, whoever says what.
    client_host: Mapped[str | None] = mapped_column(Text)
    client_addr: Mapped[str | None] = mapped_column(INET, server_default=text("inet_client_addr()"))
    project_version: Mapped[str] = mapped_column(String(64))
    # sha256 of the revision file's normalised code (media_db/deploy/history.py: ruff-proof).
    checksum: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(10))

"""The rewriting of one revision as the rules see it (media_db/autogen/rules/, expand_contract):
its connection and models, and what the file must declare as the rules go: the `Locks:` lines,
what each direction drops, the lint findings made on purpose and the refusals; and `Undoable`,
an upgrade's steps returned with the downgrade's that undo them."""

import functools
import re
from collections import defaultdict
from typing import Any, NamedTuple

from alembic.operations import ops
from alembic.util import CommandError
from sqlalchemy import Connection, MetaData, inspect, text

from media_db import transitions
from media_db.autogen.locks import WAIVERS, declarations, locks_paragraph
from media_db.dependents import Dependent
from media_db.transitions import Transition

UPGRADE, DOWNGRADE = "upgrade", "downgrade"


class Undoable(NamedTuple):
    """What a rule writes for an upgrade's column operation (`steps`) with what the downgrade
    writes for the same column (`undo`): in place of autogenerate's plain operation there (an
    expand's way down, a contract's), or, `then_its_own`, before what its rule writes for it."""

    steps: list[ops.MigrateOperation]
    undo: list[ops.MigrateOperation]
    then_its_own: bool = False


class Rewrite:
    """The rewriting of one revision: its operations, and what the file must declare."""

    def __init__(
        self, connection: Connection, revision: str = "", metadata: MetaData | None = None
    ) -> None:
        self.connection, self.revision = connection, revision
        self.metadata = metadata or MetaData()  # the models autogenerate compared with
        self.quote = connection.dialect.identifier_preparer.quote
        self.locks: dict[str, list[str]] = {UPGRADE: [], DOWNGRADE: []}
        self.drops: dict[str, list[str]] = defaultdict(list)
        self.waivers: dict[str, dict[str, str]] = defaultdict(dict)
        self.backfills: dict[str, str] = {}
        self.refusals: list[str] = []
        # Indexes on a renamed column's old name: they serve its readers until the contract,
        # which drops them with the column (autogenerate does not see them: environment.py).
        self.kept_indexes: dict[str, Dependent] = {}
        # Those the models keep under their names: the expand carries them to the new column
        # (carried.carried), in place of autogenerate's drop and create, either way.
        self.carried: set[str] = set()
        # Each type change's cutover (its last step), after which nothing may commit on its own
        # (rewriter.cut_over_too_early).
        self.cutovers: list[tuple[str, ops.MigrateOperation]] = []
        # The dependents carried by this revision's transitions so far: where (carried.py).
        self.carrying: dict[str, str] = {}
        # Indexes and constraints on a contract's old column: they go with the column, and its
        # way down builds them again (expand_contract.contract_old_column); autogenerate's own
        # drop and create of them are left out.
        self.gone_with_columns: set[str] = set()
        # Foreign keys referencing a renamed key, and their copies over its new name: the rename
        # writes their steps itself (keys.referenced_again), so autogenerate's own
        # drop and add of them, either way, are left out.
        self.moving_references: set[str] = set()

    @functools.cached_property
    def in_flight(self) -> dict[str, Transition]:
        """The transitions the catalog has in flight, by sync trigger; read when a rule asks
        (a hand-written revision is numbered with no database)."""
        return {found.name: found for found in transitions.in_flight(self.connection)}

    def waive(self, direction: str, rule: str, why: str | None = None) -> None:
        self.waivers[direction][rule] = why or WAIVERS[rule]

    def lock(self, direction: str, line: str) -> None:
        self.locks[direction].append(line)

    def drop(self, direction: str, kind: str, name: str, rule: str) -> None:
        prefix = "upgrade_" if direction == UPGRADE else ""
        self.drops[f"{prefix}drops_{kind}"].append(name)
        self.waive(direction, rule)

    def volatile_functions(self, sql: str) -> list[str]:
        called = sorted(set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", sql)))
        if not called:
            return []
        rows = self.connection.execute(
            text(
                "SELECT DISTINCT proname FROM pg_proc WHERE provolatile = 'v' "
                "AND proname = ANY(:names) ORDER BY proname"
            ),
            {"names": called},
        )
        return [f"{name}()" for (name,) in rows]

    def reflected_columns(self, table: str) -> list[Any]:
        return list(inspect(self.connection).get_columns(table))

    def key(self, table: str) -> str | None:
        """The one-column primary key backfill batches are chosen by, or None."""
        columns = inspect(self.connection).get_pk_constraint(table)["constrained_columns"]
        return columns[0] if len(columns) == 1 else None

    def marker(self, table: str, column: str) -> tuple[str, str] | None:
        """The transition the models' column declares (transitions.MARKERS), if any."""
        found = transitions.column_named(self.metadata.tables.get(table), column)
        return transitions.marker(found) if found is not None else None

    def template_args(self) -> dict[str, str]:
        if self.refusals:
            raise CommandError(
                "No revision written: these changes have no lock-safe form on a populated "
                "table.\n  - " + "\n  - ".join(self.refusals)
            )
        return {
            "locks": locks_paragraph(self.locks),
            "declarations": declarations(self.drops, self.waivers, self.backfills),
        }

"""What a revision written by `make revision` says about itself: the phrases of its `Locks:`
lines and the paragraph they make in its docstring, and its declarations: what each direction
drops (read by the data-loss guard, media_db/deploy/data_loss.py) and the `make lint-sql` findings
it makes on purpose, each with its reason (`lint_waivers`, read by media_db/dev/lint_sql.py).
"""

import textwrap
from collections.abc import Mapping, Sequence

from alembic_utils.reversible_op import CreateOp, DropOp, ReplaceOp, RevertOp

# In the docstring of every revision make revision wrote (its Locks: lines follow).
GENERATED = "as `make revision` wrote them"
DOCSTRING_WIDTH = 99  # ruff's line length, which ruff format does not enforce in docstrings

CATALOG_ONLY = "ACCESS EXCLUSIVE, briefly: a catalog update, no scan or rewrite"
CONCURRENT = "SHARE UPDATE EXCLUSIVE, reads and writes continue during the build"
VALIDATED = "VALIDATE scans under SHARE UPDATE EXCLUSIVE, reads and writes continue"
GUARDED_DROP = (
    "ACCESS EXCLUSIVE, briefly; under it the data-loss guard first looks for data (reading the "
    "table until it finds some) unless the operator consented"
)
# alembic_utils' operations on functions and triggers: what each takes (CREATE TRIGGER and
# DROP TRIGGER docs; a function is a catalog row of its own, locking no table).
ENTITY_VERBS = {
    CreateOp: "create_entity",
    ReplaceOp: "replace_entity",
    RevertOp: "replace_entity",
    DropOp: "drop_entity",
}
FUNCTION_CHANGE = "no table lock (a catalog row); calls after the commit run the new definition"
FUNCTION_DROP = "no table lock; refused, changing nothing, while a trigger still executes it"
BRIEFLY = "briefly (a catalog update, no scan), waiting at most the session's lock_timeout"
TRIGGER_LOCKS = {
    CreateOp: f"SHARE ROW EXCLUSIVE on {{table}}, {BRIEFLY}: writes wait, reads continue",
    DropOp: f"ACCESS EXCLUSIVE on {{table}}, {BRIEFLY}: reads and writes wait",
    ReplaceOp: f"DROP TRIGGER then CREATE TRIGGER in one transaction: ACCESS EXCLUSIVE on "
    f"{{table}} until the commit, {BRIEFLY}: reads and writes wait",
}
TRIGGER_LOCKS[RevertOp] = TRIGGER_LOCKS[ReplaceOp]
RERUN = "a leftover of a failed earlier run, so that running the revision again finishes it"
# Storage parameters PostgreSQL changes under SHARE UPDATE EXCLUSIVE (ALTER TABLE docs).
LIGHT_STORAGE_PARAMETERS = ("autovacuum_", "toast.", "fillfactor", "parallel_workers")
# squawk's findings on the safe forms, and why each is deliberate (`lint_waivers` in the file).
WAIVERS = {
    "ban-drop-table": "declared; the data-loss guard checks the table under its lock",
    "ban-drop-column": "declared; the data-loss guard checks the column under its lock",
    "ban-drop-constraint": "drops what the other direction adds, or a leftover, to re-run",
    "ban-drop-not-null": "undoes a SET NOT NULL",
    "changing-column-type": "binary-compatible, no rewrite (or undoing such a widening)",
    "adding-not-nullable-field": "SET NOT NULL proven by a validated CHECK: no scan",
    "ban-drop-function": "removed from the models, or undoing its creation; no trigger uses it",
}
# Expand/contract (media_db/transitions.py): what each step locks, and why its drop of a
# column needs no consent.
LOSSLESS_DROP = "expand/contract: guarded, under its lock, to lose nothing"
RENAMING = "a type change's cutover: the column keeps its name, with the new type"
SYNC_DROP = "expand/contract: the sync trigger's own function, dropped with it"
SYNC_TRIGGER = (
    "SHARE ROW EXCLUSIVE for the sync trigger, ACCESS EXCLUSIVE for the column, in one "
    "transaction: catalog updates, no scan or rewrite"
)
BATCHES = "committed batches of 5,000 rows: row locks, briefly; reads and writes continue"
GUARD_SCAN = (
    "ACCESS EXCLUSIVE while the guard reads the table for a value the other shape lacks (one "
    "scan: reads and writes wait), then catalog updates"
)
GUARD_INDEXED = (
    "ACCESS EXCLUSIVE while the guard reads its index (built before, CONCURRENTLY) for a value "
    "the other shape lacks: no scan of the table, then catalog updates"
)


def locks_paragraph(locks: Mapping[str, Sequence[str]]) -> str:
    """The docstring's `Locks:` paragraph: each direction's lines, in the order written."""
    lines = [f"Locks: one line per operation, {GENERATED}."]
    for direction, entries in locks.items():
        lines.append(f"  {direction}:")
        for entry in entries or ["nothing"]:
            lines += textwrap.wrap(
                f"{entry}.",
                width=DOCSTRING_WIDTH,
                initial_indent="  - ",
                subsequent_indent="    ",
                break_on_hyphens=False,
            )
    return "\n".join(lines)


def declarations(
    drops: Mapping[str, Sequence[str]],
    waivers: Mapping[str, Mapping[str, str]],
    backfills: Mapping[str, str] | None = None,
) -> str:
    """The module-level declarations: the drops by name (`drops_tables`, `upgrade_drops_columns`,
    ...), the waived rules by direction (directions that waive nothing left out), and the
    upgrade's batched backfills (`backfills`, read by make upgrade's progress)."""
    lines = []
    if backfills:
        lines += [
            "# The upgrade's batched backfills: table -> a row still to do (for progress).",
            "backfills = {",
            *(f"    {table!r}: ({_pieces(condition)})," for table, condition in backfills.items()),
            "}",
        ]
    if drops:
        lines.append(
            "# What each direction drops, checked for data by the guard "
            "(media_db/deploy/data_loss.py)."
        )
        if any("lossless" in name for name in drops):
            lines.append(
                "# lossless_*: by the revision's own guard instead, under the drop's lock."
            )
        for name, names in sorted(drops.items()):
            lines += [f"{name} = (", *(f"    {entry!r}," for entry in names), ")"]
    waived = {direction: rules for direction, rules in waivers.items() if rules}
    if waived:
        lines += [
            "# `make lint-sql` findings made on purpose: direction -> rule -> why.",
            "lint_waivers = {",
        ]
        for direction, rules in waived.items():
            lines.append(f"    {direction!r}: {{")
            lines += [f"        {rule!r}: {why!r}," for rule, why in sorted(rules.items())]
            lines.append("    },")
        lines.append("}")
    return "\n".join(lines)


def _pieces(text: str) -> str:
    """`text` as adjacent string literals that fit the line length (ruff keeps them apart)."""
    pieces = textwrap.wrap(text, width=70, drop_whitespace=False, break_on_hyphens=False)
    return " ".join(repr(piece) for piece in pieces)

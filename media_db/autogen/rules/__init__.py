"""The rewrite rules: one function per kind of operation, registered with `@rewrites` for its
exact type (as Alembic's `Rewriter.rewrites`). The lock-safe forms they share are
media_db/autogen/forms.py.

Each rule takes the revision's `Rewrite` (media_db/autogen/state.py: its connection, its
models, what the file must declare), the operation and the direction, and returns what is
written in its place: a list of operations, or, for an upgrade's expand or contract, an
`Undoable` (the steps with the downgrade's for the same column, which the walk writes there):

- `columns`: add, drop, alter a column (the expand/contract ones handed to
  media_db/autogen/expand_contract.py);
- `constraints`: indexes and constraints, built CONCURRENTLY or NOT VALID then VALIDATE;
- `entities`: functions, triggers (alembic_utils) and table storage parameters.
"""

from collections.abc import Callable
from typing import TypeVar

from alembic.operations import ops
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.reversible_op import ReversibleOp

from media_db.autogen.state import Undoable

Written = list[ops.MigrateOperation] | Undoable
Rule = TypeVar("Rule", bound=Callable[..., Written])
# The rule for each kind of operation, filled by @rewrites as the rule modules are imported.
RULES: dict[type[ops.MigrateOperation], Callable[..., Written]] = {}


def rewrites(*kinds: type[ops.MigrateOperation]) -> Callable[[Rule], Rule]:
    """Register the decorated function as the rule for operations of exactly these types (a
    subclass is not judged by its parent's rule), as Alembic's `Rewriter.rewrites`."""

    def register(rule: Rule) -> Rule:
        for kind in kinds:
            RULES[kind] = rule
        return rule

    return register


def table_of(operation: ops.MigrateOperation) -> str:
    if isinstance(operation, ReversibleOp) and isinstance(operation.target, PGTrigger):
        return operation.target.on_entity.partition(".")[2]
    return str(getattr(operation, "table_name", None) or getattr(operation, "source_table", ""))

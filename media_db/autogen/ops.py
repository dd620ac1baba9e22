"""The operations `make revision` writes besides Alembic's own, each with its renderer: how it
appears in the revision file (registered with Alembic's renderers, as Alembic's operations are).
"""

import textwrap

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import render_op
from alembic.operations import ops
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.replaceable_entity import ReplaceableEntity


class AutocommitBlock(ops.MigrateOperation):
    """Operations that must run outside a transaction, written as Alembic's autocommit block."""

    def __init__(self, operations: list[ops.MigrateOperation]) -> None:
        self.operations = operations


@renderers.dispatch_for(AutocommitBlock)
def _render_autocommit_block(context: AutogenContext, block: AutocommitBlock) -> list[str]:
    # Alembic's printer indents after the `:` line; the empty line ends the block.
    lines = ["with op.get_context().autocommit_block():"]
    for operation in block.operations:
        lines += render_op(context, operation)
    return [*lines, ""]


class WhileColumnBlock(AutocommitBlock):
    """An autocommit block run only while a column is there (`probe`: SQL giving one boolean),
    so that a re-run after a later step dropped or renamed it skips the block; offline, always
    written."""

    def __init__(self, probe: str, operations: list[ops.MigrateOperation]) -> None:
        super().__init__(operations)
        self.probe = probe


@renderers.dispatch_for(WhileColumnBlock)
def _render_while_column_block(context: AutogenContext, block: WhileColumnBlock) -> list[str]:
    lines = [
        "with op.get_context().autocommit_block():",
        f"if op.get_context().as_sql or op.get_bind().scalar(sa.text({_literal(block.probe)})):",
    ]
    for operation in block.operations:
        lines += render_op(context, operation)
    return [*lines, "", ""]


class Comment(ops.MigrateOperation):
    """A comment line in the written revision."""

    def __init__(self, text: str) -> None:
        self.text = text


@renderers.dispatch_for(Comment)
def _render_comment(context: AutogenContext, comment: Comment) -> list[str]:
    # Wrapped so that, indented in upgrade() or a block, it stays within the line length.
    return [f"# {line}" for line in textwrap.wrap(comment.text, width=88)]


class Kept(Comment):
    """Where a drop would go, for a table that survives downgrades: a comment saying why."""


@renderers.dispatch_for(Kept)
def _render_kept(context: AutogenContext, kept: Kept) -> list[str]:
    # `pass`: a downgrade() with nothing else to do stays valid Python.
    return [*(f"# {line}" for line in textwrap.wrap(kept.text, width=80)), "pass"]


class Statement(ops.ExecuteSQLOp):
    """`op.execute(...)` of one SQL statement, its text cut in pieces that fit the line length."""


@renderers.dispatch_for(Statement)
def _render_statement(context: AutogenContext, statement: Statement) -> str:
    assert isinstance(statement.sqltext, str)
    return f"op.execute({_literal(statement.sqltext)})"


def _literal(sql: str) -> str:
    """`sql` as adjacent string literals, cut in pieces that fit the line length."""
    pieces = textwrap.wrap(sql, width=60, drop_whitespace=False, break_on_hyphens=False)
    return " ".join(repr(piece) for piece in pieces)


class Backfill(ops.MigrateOperation):
    """A batched backfill written as 0003's: committed batches (`batch`, repeated until it
    updates no row) in an autocommit block; offline, one UPDATE (`whole`)."""

    def __init__(self, batch: str, whole: str) -> None:
        self.batch, self.whole = batch, whole


@renderers.dispatch_for(Backfill)
def _render_backfill(context: AutogenContext, backfill: Backfill) -> list[str]:
    # Each empty line closes one block for Alembic's printer (while, with, else).
    return [
        "if op.get_context().as_sql:",
        f"op.execute({_literal(backfill.whole)})",
        "else:",
        "with op.get_context().autocommit_block():",
        f"while op.get_bind().execute(sa.text({_literal(backfill.batch)})).rowcount:",
        "pass",
        "",
        "",
        "",
    ]


class EntityStep(ops.MigrateOperation):
    """An alembic_utils operation (`op.create_entity`, `replace_entity`, `drop_entity`) on a
    function or trigger, written with its definition in pieces that fit the line length."""

    def __init__(self, verb: str, entity: ReplaceableEntity) -> None:
        self.verb, self.entity = verb, entity


@renderers.dispatch_for(EntityStep)
def _render_entity_step(context: AutogenContext, step: EntityStep) -> list[str]:
    entity, kind = step.entity, type(step.entity)
    context.imports.add(f"from {kind.__module__} import {kind.__name__}")
    arguments: dict[str, object] = {"schema": entity.schema, "signature": entity.signature}
    if isinstance(entity, PGTrigger):
        arguments |= {"on_entity": entity.on_entity, "is_constraint": entity.is_constraint}
    name = entity.to_variable_name()
    return [
        f"{name} = {kind.__name__}(",
        *(f"    {key}={value!r}," for key, value in arguments.items()),
        "    definition=(",
        *(f"        {piece!r}" for piece in _pieces(entity.definition)),
        "    ),",
        ")",
        # alembic_utils adds its operations to `op` when imported: mypy cannot see them.
        f"op.{step.verb}({name})  # type: ignore[attr-defined]",
    ]


def _pieces(text: str, width: int = 64) -> list[str]:
    """`text` cut after a space (or at `width`) into pieces that join back to it exactly."""
    pieces = []
    for line in text.splitlines(keepends=True):
        while len(line) > width:
            cut = line.rfind(" ", 0, width) + 1 or width
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
    return pieces

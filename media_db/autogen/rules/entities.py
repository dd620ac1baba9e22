"""Rules for functions and triggers (alembic_utils) and table storage parameters: their locks
said; an expand/contract's sync trigger handed to media_db/autogen/expand_contract.py."""

from alembic.operations import ops
from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.reversible_op import CreateOp, DropOp, ReplaceOp, ReversibleOp, RevertOp

from media_db.autogen import expand_contract
from media_db.autogen.locks import (
    CATALOG_ONLY,
    ENTITY_VERBS,
    FUNCTION_CHANGE,
    FUNCTION_DROP,
    LIGHT_STORAGE_PARAMETERS,
    TRIGGER_LOCKS,
)
from media_db.autogen.ops import EntityStep, Statement
from media_db.autogen.rules import (
    rewrites,
    table_of,
)
from media_db.autogen.state import Rewrite
from media_db.deploy import storage_parameters


@rewrites(storage_parameters.SetStorageParametersOp)
def set_storage_parameters(
    rw: Rewrite, change: storage_parameters.SetStorageParametersOp, direction: str
) -> list[ops.MigrateOperation]:
    names = sorted({*change.set_, *change.reset})
    light = all(name.startswith(LIGHT_STORAGE_PARAMETERS) for name in names)
    lock = "SHARE UPDATE EXCLUSIVE, reads and writes continue" if light else CATALOG_ONLY
    rw.lock(direction, f"storage parameters {', '.join(names)} of {change.table_name}: {lock}")
    return [Statement(statement) for statement in change.statements()]


@rewrites(CreateOp, ReplaceOp, RevertOp, DropOp)
def function_or_trigger(
    rw: Rewrite, operation: ReversibleOp, direction: str
) -> list[ops.MigrateOperation]:
    verb = ENTITY_VERBS[type(operation)]
    # A revert puts back the definition autogenerate found on the server.
    entity = operation.target
    if isinstance(operation, RevertOp) and entity._version_to_replace is not None:
        entity = entity._version_to_replace
    moving = rw.in_flight.get(entity.signature) if isinstance(entity, PGTrigger) else None
    if moving is not None and moving.table == table_of(operation):
        return expand_contract.contract_trigger(rw, moving, direction)
    if isinstance(entity, PGTrigger):
        table = table_of(operation)
        lock = TRIGGER_LOCKS[type(operation)].format(table=table)
        rw.lock(direction, f"{verb} trigger {entity.signature} on {table}: {lock}")
    elif isinstance(entity, PGFunction):
        lock = FUNCTION_CHANGE
        if isinstance(operation, DropOp):
            lock = FUNCTION_DROP
            rw.waive(direction, "ban-drop-function")
        rw.lock(direction, f"{verb} function {entity.signature}: {lock}")
    else:
        rw.lock(
            direction,
            f"{verb} {entity.identity}: not judged by make revision, review its locks by hand",
        )
    return [EntityStep(verb, entity)]

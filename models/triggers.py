"""Database functions and triggers, declared once as alembic_utils entities.

Autogenerate compares them with the live ones (registered in media_db/deploy/environment.py's
scope) and writes `op.create_entity` / `op.replace_entity` / `op.drop_entity`; `create_all`
creates them too, after the tables, so `make verify`'s scratch build includes them.

Revision 0006 created the same objects from its own copy, as revisions never import models;
tests/deploy/test_hardening_protects_raw_writers.py proves the behaviour.
"""

import copy
from typing import Any

from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.replaceable_entity import ReplaceableEntity
from sqlalchemy import Connection, MetaData, event, text

# alembic_utils names each entity's schema; ours are in the default one, as our tables are.
SCHEMA = "public"

# n8n updates rows with raw SQL: the trigger moves updated_at for every writer, not the ORM only.
TOUCH_UPDATED_AT = PGFunction(
    schema=SCHEMA,
    signature="media_items_touch_updated_at()",
    definition="""RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        NEW.updated_at := now();
        RETURN NEW;
    END
    $$""",
)
MEDIA_ITEMS_TOUCH_UPDATED_AT = PGTrigger(
    schema=SCHEMA,
    signature="media_items_touch_updated_at",
    on_entity=f"{SCHEMA}.media_items",
    # The function unqualified, found on the search_path, as in 0006 (and in verify's scratch).
    definition=f"BEFORE UPDATE ON {SCHEMA}.media_items "
    "FOR EACH ROW EXECUTE FUNCTION media_items_touch_updated_at()",
)

# Idle workers LISTEN here: an INSERT by any writer (n8n's raw SQL too) wakes them at once.
# Once per statement, not per row: a bulk insert costs one notification.
JOBS_CHANNEL = "media_analysis_jobs"
NOTIFY_JOBS = PGFunction(
    schema=SCHEMA,
    signature="processing_jobs_notify()",
    definition=f"""RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{JOBS_CHANNEL}', '');
        RETURN NULL;
    END
    $$""",
)
PROCESSING_JOBS_NOTIFY = PGTrigger(
    schema=SCHEMA,
    signature="processing_jobs_notify",
    on_entity=f"{SCHEMA}.processing_jobs",
    definition=f"AFTER INSERT ON {SCHEMA}.processing_jobs "
    "FOR EACH STATEMENT EXECUTE FUNCTION processing_jobs_notify()",
)

# Limits per key (processing_limits), enforced by the claim itself: how many jobs of a key this
# claim may start, 0 when paused, at a limit, or when another claim holds the key. The claim
# calls it once per limited key before it picks jobs. The key's transaction-level advisory lock
# (taken without waiting: a key another claim holds is skipped, as SKIP LOCKED skips rows) is
# held to the claim's commit, so claims of one key run one after the other; VOLATILE, each count
# reads a fresh snapshot, which sees the previous holder's claims (committed before its lock was
# released). Running jobs are counted over the running ones (a few per worker); starts in the
# last second through idx_processing_jobs_started_by_limit_key. A per_second below 1 allows one
# start per 1/per_second seconds.
LIMITS_LOCK_CLASS = 364_013  # the advisory lock's first key: the limits' own space
LIMIT_ROOM = PGFunction(
    schema=SCHEMA,
    signature=(
        "processing_limits_room(p_key character varying, p_max_running integer, "
        "p_per_second numeric, p_paused boolean)"
    ),
    definition=f"""RETURNS integer
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        room integer := 2147483647;
        taken integer;
        window_length interval;
        starts integer;
        since timestamptz;
    BEGIN
        IF p_paused THEN
            RETURN 0;
        END IF;
        IF p_max_running IS NULL AND p_per_second IS NULL THEN
            RETURN room;
        END IF;
        IF NOT pg_try_advisory_xact_lock({LIMITS_LOCK_CLASS}, hashtext(p_key)) THEN
            RETURN 0;
        END IF;
        IF p_max_running IS NOT NULL THEN
            SELECT count(*) INTO taken FROM processing_jobs
            WHERE status = 'running' AND COALESCE(limit_key, workflow_type) = p_key;
            room := least(room, p_max_running - taken);
        END IF;
        IF p_per_second IS NOT NULL THEN
            IF p_per_second >= 1 THEN
                starts := floor(p_per_second);
                window_length := interval '1 second';
            ELSE
                starts := 1;
                window_length := interval '1 second' / p_per_second;
            END IF;
            -- now(), as the claim writes started_at: a claim evaluated late (a busy server)
            -- counts the window its own starts are written in. A value: the index ranges over it.
            since := now() - window_length;
            SELECT count(*) INTO taken FROM processing_jobs
            WHERE COALESCE(limit_key, workflow_type) = p_key AND started_at > since;
            room := least(room, starts - taken);
        END IF;
        RETURN greatest(room, 0);
    END
    $$""",
)

# In creation order: a trigger after the function it executes.
ENTITIES: list[ReplaceableEntity] = [
    TOUCH_UPDATED_AT,
    MEDIA_ITEMS_TOUCH_UPDATED_AT,
    NOTIFY_JOBS,
    PROCESSING_JOBS_NOTIFY,
    LIMIT_ROOM,
]


def in_schema(entity: ReplaceableEntity, schema: str) -> ReplaceableEntity:
    """The same entity in another schema (verify builds the models in a scratch schema)."""
    moved = copy.copy(entity)
    moved.schema = schema
    if isinstance(moved, PGTrigger):
        moved.on_entity = f"{schema}.{moved.on_entity.partition('.')[2]}"
    return moved


def attach(metadata: MetaData) -> None:
    """`create_all` creates the entities after the tables, in the schema it builds in."""

    def create_entities(target: MetaData, connection: Connection, **kw: Any) -> None:
        schema = str(connection.scalar(text("SELECT current_schema()")))
        for entity in ENTITIES:
            connection.execute(in_schema(entity, schema).to_sql_statement_create())

    event.listen(metadata, "after_create", create_entities)

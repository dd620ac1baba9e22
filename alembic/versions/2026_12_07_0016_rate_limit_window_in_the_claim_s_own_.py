"""rate limit window in the claim's own time

Why: (issue 36) a per-second limit let more than its number start in one second on a busy
server. The claim writes started_at = now(), its transaction's start, while
processing_limits_room() counted the window back from clock_timestamp(): a claim evaluated late
(its statement waiting for the CPU) looked at a window later than the one its own starts are
written in, and missed the starts just before it (the tests' one-second windows held 5 of 4).
The window now ends at now() too, the claim's own time; the advisory lock per key still orders
the claims. How it avoids long locks: CREATE OR REPLACE FUNCTION, a catalog row.
Locks: one line per operation, as `make revision` wrote them.
  upgrade:
  - replace_entity function processing_limits_room(p_key character varying, p_max_running integer,
    p_per_second numeric, p_paused boolean): no table lock (a catalog row); calls after the commit
    run the new definition.
  downgrade:
  - replace_entity function processing_limits_room(p_key character varying, p_max_running integer,
    p_per_second numeric, p_paused boolean): no table lock (a catalog row); calls after the commit
    run the new definition.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 15:56:15.374324+00:00
"""

from collections.abc import Sequence

from alembic import op
from alembic_utils.pg_function import PGFunction

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    public_processing_limits_room = PGFunction(
        schema="public",
        signature=(
            "processing_limits_room(p_key character varying, p_max_running integer, "
            "p_per_second numeric, p_paused boolean)"
        ),
        definition=(
            "RETURNS integer\n"
            "    LANGUAGE plpgsql VOLATILE AS $$\n"
            "    DECLARE\n"
            "        room integer := 2147483647;\n"
            "        taken integer;\n"
            "        window_length interval;\n"
            "        starts integer;\n"
            "        since timestamptz;\n"
            "    BEGIN\n"
            "        IF p_paused THEN\n"
            "            RETURN 0;\n"
            "        END IF;\n"
            "        IF p_max_running IS NULL AND p_per_second IS NULL THEN\n"
            "            RETURN room;\n"
            "        END IF;\n"
            "        IF NOT pg_try_advisory_xact_lock(364013, "
            "hashtext(p_key)) THEN\n"
            "            RETURN 0;\n"
            "        END IF;\n"
            "        IF p_max_running IS NOT NULL THEN\n"
            "            SELECT count(*) INTO taken FROM processing_jobs\n"
            "            WHERE status = 'running' AND COALESCE(limit_key, "
            "workflow_type) = p_key;\n"
            "            room := least(room, p_max_running - taken);\n"
            "        END IF;\n"
            "        IF p_per_second IS NOT NULL THEN\n"
            "            IF p_per_second >= 1 THEN\n"
            "                starts := floor(p_per_second);\n"
            "                window_length := interval '1 second';\n"
            "            ELSE\n"
            "                starts := 1;\n"
            "                window_length := interval '1 second' / "
            "p_per_second;\n"
            "            END IF;\n"
            "            -- now(), as the claim writes started_at\\: a claim "
            "evaluated late (a busy server)\n"
            "            -- counts the window its own starts are written in. "
            "A value\\: the index ranges over it.\n"
            "            since := now() - window_length;\n"
            "            SELECT count(*) INTO taken FROM processing_jobs\n"
            "            WHERE COALESCE(limit_key, workflow_type) = p_key "
            "AND started_at > since;\n"
            "            room := least(room, starts - taken);\n"
            "        END IF;\n"
            "        RETURN greatest(room, 0);\n"
            "    END\n"
            "    $$"
        ),
    )
    op.replace_entity(public_processing_limits_room)  # type: ignore[attr-defined]


def downgrade() -> None:
    public_processing_limits_room = PGFunction(
        schema="public",
        signature=(
            "processing_limits_room(p_key character varying, p_max_running integer, "
            "p_per_second numeric, p_paused boolean)"
        ),
        definition=(
            "returns integer\n"
            " LANGUAGE plpgsql\n"
            "AS $function$\n"
            "    DECLARE\n"
            "        room integer := 2147483647;\n"
            "        taken integer;\n"
            "        window_length interval;\n"
            "        starts integer;\n"
            "        since timestamptz;\n"
            "    BEGIN\n"
            "        IF p_paused THEN\n"
            "            RETURN 0;\n"
            "        END IF;\n"
            "        IF p_max_running IS NULL AND p_per_second IS NULL THEN\n"
            "            RETURN room;\n"
            "        END IF;\n"
            "        IF NOT pg_try_advisory_xact_lock(364013, "
            "hashtext(p_key)) THEN\n"
            "            RETURN 0;\n"
            "        END IF;\n"
            "        IF p_max_running IS NOT NULL THEN\n"
            "            SELECT count(*) INTO taken FROM processing_jobs\n"
            "            WHERE status = 'running' AND COALESCE(limit_key, "
            "workflow_type) = p_key;\n"
            "            room := least(room, p_max_running - taken);\n"
            "        END IF;\n"
            "        IF p_per_second IS NOT NULL THEN\n"
            "            IF p_per_second >= 1 THEN\n"
            "                starts := floor(p_per_second);\n"
            "                window_length := interval '1 second';\n"
            "            ELSE\n"
            "                starts := 1;\n"
            "                window_length := interval '1 second' / "
            "p_per_second;\n"
            "            END IF;\n"
            "            since := clock_timestamp() - window_length;  -- a "
            "value\\: the index can range over it\n"
            "            SELECT count(*) INTO taken FROM processing_jobs\n"
            "            WHERE COALESCE(limit_key, workflow_type) = p_key "
            "AND started_at > since;\n"
            "            room := least(room, starts - taken);\n"
            "        END IF;\n"
            "        RETURN greatest(room, 0);\n"
            "    END\n"
            "    $function$"
        ),
    )
    op.replace_entity(public_processing_limits_room)  # type: ignore[attr-defined]

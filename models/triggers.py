"""Database behaviour that autogenerate cannot see, declared once and attached to the tables,
so that `create_all` (and with it `make verify`'s comparison) includes it.

Revision 0006 creates the same objects; tests/test_hardening_protects_raw_writers.py proves
the behaviour and `make verify` proves the live definition matches this one.
"""

from sqlalchemy import DDL, Table, event

TOUCH_UPDATED_AT_FUNCTION = DDL(  # type: ignore[no-untyped-call]
    """
    CREATE FUNCTION media_items_touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        NEW.updated_at := now();
        RETURN NEW;
    END
    $$"""
)
TOUCH_UPDATED_AT_TRIGGER = DDL(  # type: ignore[no-untyped-call]
    """
    CREATE TRIGGER media_items_touch_updated_at
    BEFORE UPDATE ON media_items
    FOR EACH ROW EXECUTE FUNCTION media_items_touch_updated_at()"""
)


def attach(media_items: Table) -> None:
    event.listen(media_items, "after_create", TOUCH_UPDATED_AT_FUNCTION)
    event.listen(media_items, "after_create", TOUCH_UPDATED_AT_TRIGGER)

"""Declarative base shared by every model: one MetaData, PostgreSQL's own constraint names."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Double, MetaData
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase

# PostgreSQL's default names, so models, revisions and the plan's hand-written SQL agree name for
# name (`media_items_pkey`, `analysis_results_media_item_id_fkey`). Check constraints need an
# explicit `name=`, which the convention then prefixes with the table.
NAMING_CONVENTION = {
    "pk": "%(table_name)s_pkey",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "ix": "%(table_name)s_%(column_0_N_name)s_idx",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute as is
        datetime: DateTime(timezone=True),
        uuid.UUID: UUID(as_uuid=True),
        float: Double(),  # the plan's FLOAT, which PostgreSQL stores as double precision
        dict[str, Any]: JSONB(),
    }

"""Alembic environment: the URL comes from the caller (worker.store.migrate) or settings."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import worker.store.counter_rows
import worker.store.event_keys
import worker.store.gauges  # its index on step_runs
import worker.store.heartbeats
import worker.store.intake
import worker.store.leases
import worker.store.tables  # noqa: F401  (these register the tables)
from worker.config import settings
from worker.store.db import database_url, make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or database_url(settings())
connectable = config.attributes.get("connection")

if connectable is None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            render_as_batch=url.startswith("sqlite"),
        )
        context.run_migrations()
        connection.commit()
else:
    context.configure(connection=connectable, target_metadata=SQLModel.metadata)
    context.run_migrations()

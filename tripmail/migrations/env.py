from alembic import context
from sqlalchemy import text

from tripmail.db import make_engine
from tripmail.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "tripmail.migrations.upgrade sets sqlalchemy.url"
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch mode rebuilds a table by copying it and dropping the old one; with foreign keys enforced,
            # that DROP would cascade and delete every row that references the table (contacts of a workspace).
            # The pragma only takes effect outside a transaction, hence the commit first.
            connection.execute(text("PRAGMA foreign_keys=OFF"))
            connection.commit()
        # Batch mode lets later migrations alter columns on SQLite, which has no ALTER COLUMN.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()

"""Engines and sessions; callers own the transaction (`with sessions.begin()`)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000

Row = TypeVar("Row")


def make_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the api read while a worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_sessionmaker(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(make_engine(settings.database_url), expire_on_commit=False)


def add_or_refetch(session: Session, row: Row, refetch: Callable[[], Row | None]) -> Row:
    """Insert `row` in a savepoint; when a concurrent writer won the race on a unique key, return theirs.

    The savepoint keeps the caller's transaction usable after the lost race.
    """
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = refetch()
        if existing is None:
            raise
        return existing
    return row

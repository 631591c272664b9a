"""Engines and sessions; callers own the transaction (`with sessions.begin()`)."""

import sqlite3
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import Settings
from tripmail.models import Base, table_of

# How long a SQLite writer waits for the write lock by default (Settings.sqlite_lock_wait_s).
SQLITE_LOCK_WAIT_S = 30.0


def make_engine(database_url: str, *, sqlite_lock_wait_s: float = SQLITE_LOCK_WAIT_S) -> Engine:
    url = make_url(database_url)
    # A statement's parameters are contacts' addresses and fields: hidden, an error's text (logged, stored as an
    # event's error, shown by Flower) names the statement and the cause without them.
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": sqlite_lock_wait_s}, hide_parameters=True)
    event.listen(engine, "connect", _tune_sqlite)

    def execute(cursor: Any, statement: str, parameters: Any, _context: Any) -> bool:
        return _when_unlocked(lambda: cursor.execute(statement, parameters), sqlite_lock_wait_s)

    def execute_many(cursor: Any, statement: str, parameters: Any, _context: Any) -> bool:
        return _when_unlocked(lambda: cursor.executemany(statement, parameters), sqlite_lock_wait_s)

    event.listen(engine, "do_execute", execute)
    event.listen(engine, "do_executemany", execute_many)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the api read while a worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL's recommended level: a commit reaches the operating system at once (a killed worker loses nothing) and
    # the disk at each checkpoint rather than at every commit, where the sync is costly (bench/results.md, What the
    # code's shape rests on).
    # A power loss can undo the last commits; production runs on PostgreSQL (README, "Delivery").
    cursor.execute("PRAGMA synchronous=NORMAL")
    # SQLite's own wait for a lock sleeps 1, 2, 5, 10, ... 100 ms between tries, so two worker processes that
    # take turns writing lose more time asleep than writing (bench/results.md, What the code's shape rests on).
    # Statements are tried again below in steps of a millisecond or less instead.
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.close()


# SQLITE_BUSY and SQLITE_BUSY_RECOVERY: the statement did nothing and may simply run again (a transaction meets
# the lock at its first write, so an executemany cannot have written some rows). SQLITE_BUSY_SNAPSHOT is left
# out: only a new transaction helps there, so it is raised for the caller's retry.
_LOCKED = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_BUSY_RECOVERY}


def _when_unlocked(run: Callable[[], object], wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    pause = 0.0002
    while True:
        try:
            run()
            return True
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _LOCKED or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


def make_sessionmaker(settings: Settings) -> sessionmaker[Session]:
    engine = make_engine(settings.database_url, sqlite_lock_wait_s=settings.sqlite_lock_wait_s)
    return sessionmaker(engine, expire_on_commit=False)


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    """The engine a sessionmaker binds its sessions to, for Core work that needs no Session."""
    engine: Engine = sessions.kw["bind"]
    return engine


def insert_if_absent(
    session: Session | Connection, model: type[Base], values: dict[str, Any], unique: list[str]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on a unique key: a concurrent writer that got there first wins quietly.

    No savepoint is needed, which matters on SQLite: its driver would commit a savepoint opened as the
    transaction's first write on its own.
    """
    session.execute(_insert(session, model).values(**values).on_conflict_do_nothing(index_elements=unique))


def insert_new(
    session: Session, model: type[Base], rows: list[dict[str, Any]], unique: list[str], returning: str
) -> list[Any]:
    """Many rows in one Core statement, skipping those whose unique key exists; the `returning` column of the rows
    inserted. Core rather than the ORM's bulk path: at tens of thousands of rows the ORM's bookkeeping dominates."""
    if not rows:
        return []
    statement = _insert_new_statement(session.get_bind().dialect.name, model, tuple(unique), returning)
    return list(session.scalars(statement, rows))


@lru_cache
def _insert_new_statement(dialect: str, model: type[Base], unique: tuple[str, ...], returning: str) -> Any:
    # Built once per shape: building the statement costs more than running it for a row or two.
    table = table_of(model)
    return _dialect_insert(dialect)(table).on_conflict_do_nothing(index_elements=unique).returning(table.c[returning])


def _insert(session: Session | Connection, target: Any) -> Any:
    bind = session.get_bind() if isinstance(session, Session) else session
    return _dialect_insert(bind.dialect.name)(target)


def _dialect_insert(dialect: str) -> Any:
    """The INSERT with ON CONFLICT of the database's dialect."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert

"""Which failures pass by themselves, so that work is tried again later, and which would fail every time.

Only the first kind is worth a retry: the database or Redis out of reach for a moment, a lock another process holds,
a deadlock. Anything else (SQLite's "too many SQL variables", PostgreSQL's DataError, a bug) comes back on every
try, and a task that retried it forever stranded the other events it carried.
"""

import sqlite3

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tripmail.errors import TripmailError

# SQLite's primary result codes (the low byte of an extended one) for a database that is busy, locked by another
# connection, or that the file system failed to read, write or open for a moment, or that ran out of disk or memory
# (as PostgreSQL's class 53 below).
_SQLITE_TRANSIENT = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_NOMEM,
}
# PostgreSQL's SQLSTATEs: connection exceptions (class 08) and insufficient resources (53: too many connections,
# disk full, out of memory) by class; serialization failure, deadlock, lock not available (lock_timeout), and the
# server shutting down, crashed or starting up.
_POSTGRES_TRANSIENT_CLASSES = {"08", "53"}
_POSTGRES_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed where this failed: the database or Redis away or locked."""
    if isinstance(exc, BrokerError | RedisConnectionError | RedisTimeoutError | PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:  # SQLAlchemy saw the connection drop under the statement
        return True
    driver = exc.orig
    if isinstance(driver, sqlite3.Error):
        code = getattr(driver, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_TRANSIENT
    sqlstate = getattr(driver, "sqlstate", None)
    if sqlstate is None:
        # psycopg sets `pgconn` on an error of a connection attempt (the server refused or did not answer); an
        # error without a SQLSTATE on a connection that works (more parameters than the protocol carries) is not.
        return getattr(driver, "pgconn", None) is not None
    return sqlstate[:2] in _POSTGRES_TRANSIENT_CLASSES or sqlstate in _POSTGRES_TRANSIENT


def reason(exc: BaseException) -> str:
    """The failure as its event stores it: a refusal's own text, else the error's type and message (a database
    error's names the statement, whose parameters the engine hides)."""
    return f"{type(exc).__name__}: {exc.detail if isinstance(exc, TripmailError) else exc}"

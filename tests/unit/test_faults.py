"""Which failures a task tries again: each error here is raised for real, by SQLite, PostgreSQL or Redis."""

from collections.abc import Callable
from pathlib import Path

from kombu.connection import Connection
from redis import Redis
from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError

from tests.support.ports import free_port
from tests.support.postgres import Cluster
from tripmail.db import make_engine
from tripmail.faults import is_transient, reason


def raised(run: Callable[[], object]) -> Exception:
    """What `run` raises, whatever it is: the point is how it is classified."""
    try:
        run()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def test_sqlite_locked_is_transient_and_too_many_variables_is_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    engine = make_engine(url, sqlite_lock_wait_s=0.05)
    holder = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
    with holder.begin() as holding:
        holding.execute(text("INSERT INTO t VALUES (1)"))  # SQLite's one write lock, held until the block ends
        with engine.begin() as connection:
            locked = raised(lambda: connection.execute(text("INSERT INTO t VALUES (2)")))
    too_many = text("SELECT n FROM t WHERE n IN :ns").bindparams(bindparam("ns", expanding=True))
    with engine.connect() as connection:
        # The probe that stalled a worker, past SQLite's variables (32,766 by default, 250,000 as Debian builds it).
        variables = raised(lambda: connection.execute(too_many, {"ns": [str(n) for n in range(250_001)]}))
        missing = raised(lambda: connection.execute(text("SELECT * FROM nowhere")))
    engine.dispose()
    holder.dispose()

    assert "database is locked" in str(locked)
    assert is_transient(locked)
    assert not is_transient(variables)
    assert not is_transient(missing)
    assert reason(variables).startswith("OperationalError: (sqlite3.OperationalError) too many SQL variables")


def test_postgresql_down_is_transient_and_data_errors_are_not(postgres: Cluster) -> None:
    engine = make_engine(postgres.new_database())
    with engine.connect() as connection:
        cast = raised(lambda: connection.execute(text("SELECT CAST('abc' AS FLOAT)")))
    with engine.connect() as connection:
        nul = raised(lambda: connection.execute(text("SELECT :x"), {"x": "a\x00b"}))
    with engine.connect() as connection:
        # psycopg refuses it before sending: no SQLSTATE, like a refused connection, yet the same on every try.
        too_many = text("SELECT 1 WHERE 1 IN :ns").bindparams(bindparam("ns", expanding=True))
        parameters = raised(lambda: connection.execute(too_many, {"ns": list(range(70_000))}))
    with engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.begin() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        terminated = raised(lambda: connection.execute(text("SELECT 1")))
    engine.dispose()
    nobody = make_engine(f"postgresql+psycopg://tripmail@127.0.0.1:{free_port()}/tripmail")
    refused = raised(nobody.connect)

    assert [is_transient(exc) for exc in (terminated, refused)] == [True, True]
    assert [is_transient(exc) for exc in (cast, nul, parameters)] == [False, False, False]
    assert isinstance(cast, DBAPIError)
    assert reason(cast).startswith("DataError: (psycopg.errors.InvalidTextRepresentation) invalid input syntax")


def test_redis_unreachable_is_transient() -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    # What publishing meets with Redis away (kombu's OperationalError), without Celery's retries.
    connection = Connection(nobody)  # type: ignore[no-untyped-call]  # untyped in kombu
    broker = raised(lambda: connection.ensure_connection(max_retries=1, interval_start=0))  # type: ignore[no-untyped-call]
    ping = raised(Redis.from_url(nobody).ping)
    assert [is_transient(broker), is_transient(ping)] == [True, True]
    assert not is_transient(ValueError("a bug"))

"""SQLite's one write lock: a writer that finds it taken waits its turn in short steps instead of failing."""

import threading
import time
from pathlib import Path

from sqlalchemy import text

from tripmail.db import make_engine


def test_a_second_writer_waits_for_the_first_to_commit(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'locks.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE steps (name TEXT)"))
    holding = threading.Event()

    def first_writer() -> None:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO steps VALUES ('first')"))
            holding.set()
            time.sleep(0.3)

    thread = threading.Thread(target=first_writer)
    thread.start()
    holding.wait(timeout=10)
    # busy_timeout is 0, so without Tripmail's own wait these would raise "database is locked" (a write, then DDL).
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO steps VALUES (:name)"), {"name": "second"})
    thread.join()
    holding.clear()
    thread = threading.Thread(target=first_writer)
    thread.start()
    holding.wait(timeout=10)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE later (name TEXT)"))
    thread.join()

    with engine.connect() as connection:
        names = list(connection.execute(text("SELECT name FROM steps ORDER BY rowid")).scalars())
    assert names == ["first", "second", "first"]
    engine.dispose()

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
    # busy_timeout is 0, so without Tripmail's own wait this insert would raise "database is locked".
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO steps VALUES ('second')"))
    thread.join()

    with engine.connect() as connection:
        assert list(connection.execute(text("SELECT name FROM steps ORDER BY rowid")).scalars()) == ["first", "second"]
    engine.dispose()

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.postgres import Cluster, start_cluster
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.migrations import upgrade


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database for this test, on each backend Tripmail supports."""
    return new_database(request, request.param, tmp_path)


def new_database(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    """The URL of a new, empty database: a SQLite file in `folder`, or a database of the test cluster."""
    if backend == "sqlite":
        return f"sqlite:///{folder / f'tripmail-{uuid.uuid4().hex}.db'}"
    cluster: Cluster = request.getfixturevalue("postgres")
    return cluster.new_database()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, mail_dir=tmp_path / "mail")


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A migrated database of this test's own."""
    upgrade(settings.database_url)
    maker = make_sessionmaker(settings)
    yield maker
    maker.kw["bind"].dispose()

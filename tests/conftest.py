import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
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
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tripmail.db'}"
    cluster: Cluster = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(
        f"host=127.0.0.1 port={cluster.port} user=tripmail dbname=postgres", autocommit=True
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return cluster.url(name)


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

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy.orm import Session, sessionmaker

from tests.support.databases import new_database
from tests.support.postgres import Cluster, running_cluster
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.migrations import upgrade

# Failing examples are kept in the test code (@example), not in a .hypothesis folder inside the repository.
hypothesis_settings.register_profile("tripmail", database=None)
hypothesis_settings.load_profile("tripmail")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database for this test, on each backend Tripmail supports."""
    return new_database(request, request.param, tmp_path)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, mail_dir=tmp_path / "mail")


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A database at the latest schema, by backend, made when first asked for: a test's own database is a copy of
    it, as migrating each one took most of the unit tests' set-up."""
    return {}


@pytest.fixture
def sessions(
    request: pytest.FixtureRequest, settings: Settings, migrated: dict[str, str]
) -> Iterator[sessionmaker[Session]]:
    """A migrated database of this test's own."""
    url = settings.database_url
    backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    if backend not in migrated:
        migrated[backend] = new_database(request, backend, request.getfixturevalue("tmp_path_factory").mktemp("schema"))
        upgrade(migrated[backend])
    if backend == "sqlite":
        shutil.copyfile(migrated[backend].removeprefix("sqlite:///"), url.removeprefix("sqlite:///"))
    else:
        cluster: Cluster = request.getfixturevalue("postgres")
        cluster.replace_with_copy(url, migrated[backend])
    maker = make_sessionmaker(settings)
    yield maker
    maker.kw["bind"].dispose()

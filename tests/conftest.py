from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.migrations import upgrade


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'tripmail.db'}", mail_dir=tmp_path / "mail")


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A migrated SQLite file of this test's own."""
    upgrade(settings.database_url)
    maker = make_sessionmaker(settings)
    yield maker
    maker.kw["bind"].dispose()

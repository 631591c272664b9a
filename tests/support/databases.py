"""New empty databases for a test, on either backend."""

import uuid
from pathlib import Path

import pytest

from tests.support.postgres import Cluster


def new_database(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    """The URL of a new, empty database: a SQLite file in `folder`, or a database of the test cluster."""
    if backend == "sqlite":
        return f"sqlite:///{folder / f'tripmail-{uuid.uuid4().hex}.db'}"
    cluster: Cluster = request.getfixturevalue("postgres")
    return cluster.new_database()

"""A dialect's 503 is in its own envelope: the database unreachable while a token is looked up (the live 404, 405
and 413 are in tests/integration/dialects/test_envelopes.py, its 429 in test_rate_limit.py)."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.support.envelopes import DIALECTS
from tripmail.config import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    unreachable = tmp_path_factory.mktemp("db") / "missing" / "tripmail.db"
    settings = Settings(_env_file=None, database_url=f"sqlite:///{unreachable}", redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("name", "route", "envelope"), DIALECTS, ids=[name for name, _, _ in DIALECTS])
def test_an_unreachable_database_is_503_in_the_dialect_s_envelope(
    client: TestClient, name: str, route: str, envelope: Callable[[Any, int], bool]
) -> None:
    headers = {"Authorization": "Bearer tm_live_x", "X-Authorization": "tm_live_x"}
    response = client.post(f"/compat/{name}{route}", json={"token": "tm_live_x", "id": 1}, headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    assert envelope(response.json(), 503), response.text

"""Every dialect answers in its own envelope whatever the status, a path it does not serve and a method a route does
not take included, and serves both slash forms of its paths rather than redirecting (behind a TLS proxy a 307
points at plain http, where clients drop the Authorization header). 429 is in test_rate_limit.py, on the stack that
limits a token; 503 in tests/unit/test_envelopes.py."""

import http.client
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.envelopes import DIALECTS
from tripmail.config import Settings

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")


IDS = [name for name, _, _ in DIALECTS]


def other_slash_form(path: str) -> str:
    return path.removesuffix("/") if path.endswith("/") else f"{path}/"


@pytest.mark.parametrize(("name", "route", "envelope"), DIALECTS, ids=IDS)
def test_a_path_the_dialect_does_not_serve_is_404_in_its_envelope(
    api_url: str, name: str, route: str, envelope: Callable[[Any, int], bool]
) -> None:
    for path in (f"/compat/{name}/nope", f"/compat/{name}{route}/nope/", f"/compat/{name}"):
        response = httpx.post(f"{api_url}{path}", json={}, timeout=10)
        assert response.status_code == 404, (path, response.text)
        assert envelope(response.json(), 404), response.text
        assert path in response.text


@pytest.mark.parametrize(("name", "route", "envelope"), DIALECTS, ids=IDS)
def test_a_method_the_route_does_not_take_is_405_in_its_envelope(
    api_url: str, name: str, route: str, envelope: Callable[[Any, int], bool]
) -> None:
    for path in (f"/compat/{name}{route}", f"/compat/{name}{other_slash_form(route)}"):
        response = httpx.get(f"{api_url}{path}", timeout=10)
        assert response.status_code == 405, (path, response.text)
        assert response.headers["Allow"] == "POST"
        assert envelope(response.json(), 405), response.text
        assert "GET" in response.text and "POST" in response.text


@pytest.mark.parametrize(("name", "route", "envelope"), DIALECTS, ids=IDS)
def test_a_body_declared_over_the_limit_is_413_in_its_envelope(
    api_url: str, name: str, route: str, envelope: Callable[[Any, int], bool]
) -> None:
    url = urlsplit(api_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    connection.putrequest("POST", f"/compat/{name}{route}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(Settings(_env_file=None).max_body_bytes + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert envelope(httpx.Response(413, content=response.read()).json(), 413)
    connection.close()


@pytest.mark.parametrize(("name", "route", "envelope"), DIALECTS, ids=IDS)
def test_both_slash_forms_are_served_not_redirected(
    api_url: str, name: str, route: str, envelope: Callable[[Any, int], bool]
) -> None:
    for path in (f"/compat/{name}{route}", f"/compat/{name}{other_slash_form(route)}"):
        # No token: the route's own 401 shows it was served, where a redirect would answer 307 (altcraft's body
        # is read before its token, so it is one that validates).
        response = httpx.post(f"{api_url}{path}", json={"id": 1}, timeout=10)
        assert response.status_code == 401, (path, response.status_code, response.text)
        assert envelope(response.json(), 401), response.text


def test_native_routes_take_both_slash_forms_too(api_url: str) -> None:
    for path in ("/v1/events", "/v1/events/"):
        response = httpx.post(f"{api_url}{path}", json={}, timeout=10)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"

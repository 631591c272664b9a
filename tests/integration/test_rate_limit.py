"""The per-token rate limit through a real `tripmail api` of two processes: one budget per token, shared by both."""

import http.client
import json
from pathlib import Path

import httpx
import psutil
from fastapi.testclient import TestClient

from api.app import create_app
from tests.support.api_connections import connections_to_each_process
from tests.support.builders import apply_spec, make_token, password_reset_spec, unique_workspace_key
from tests.support.envelopes import DIALECTS
from tests.support.metrics import events, scrape
from tests.support.stack import service_env, start_server, stop
from tripmail.config import Settings
from tripmail.db import make_sessionmaker

BURST = 6


def post_event(connection: http.client.HTTPConnection, token: str, email: str) -> http.client.HTTPResponse:
    body = json.dumps({"event": "FORGOT_PASSWORD", "contact": {"email": email}})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection.request("POST", "/v1/events", body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response


def test_a_token_over_its_limit_gets_429_from_every_process_and_dialect_while_another_token_is_served(
    own_settings: Settings, tmp_path: Path
) -> None:
    # One a minute after a burst of 6: nothing comes back during the test.
    settings = own_settings.model_copy(update={"rate_limit_per_minute": 1, "rate_limit_burst": BURST})
    key = unique_workspace_key("limited")
    with make_sessionmaker(settings).begin() as session:
        apply_spec(session, password_reset_spec(key))
        token, other_token = make_token(session, key), make_token(session, key)
    api, api_url = start_server(
        ["api", "--workers", "2"], service_env(settings), tmp_path / "api.log", probe="/healthz", status=200
    )
    try:
        first, second = connections_to_each_process(psutil.Process(api.pid), int(api_url.rsplit(":", 1)[1]))
        # Half the burst through each process: a budget per process would take 6 more.
        for index in range(BURST):
            response = post_event([first, second][index % 2], token, f"{key}-{index}@example.com")
            assert response.status == 202, response.status
        for connection in (first, second):
            response = post_event(connection, token, f"{key}-over@example.com")
            assert response.status == 429
            assert response.getheader("Content-Type") == "application/problem+json"
            assert 50 <= int(response.getheader("Retry-After") or 0) <= 60
        # Through a dialect, in its own envelope: cocomail's, token in a raw Authorization header.
        cocomail = httpx.post(
            f"{api_url}/compat/cocomail/events/trigger",
            json={"email": f"{key}-cocomail@example.com", "identifier": "FORGOT_PASSWORD"},
            headers={"Authorization": token},
            timeout=10,
        )
        assert cocomail.status_code == 429
        assert cocomail.json()["data"] is None
        assert "the limit is 1 requests a minute per token" in cocomail.json()["error"]
        assert 50 <= int(cocomail.headers["Retry-After"]) <= 60
        # And through every other dialect, each in its envelope, whichever header style it takes.
        for name, route, envelope in DIALECTS:
            if name == "cocomail":
                continue
            refused_there = httpx.post(
                f"{api_url}/compat/{name}{route}",
                json={"token": token, "id": 1},
                headers={"Authorization": f"Bearer {token}", "X-Authorization": token},
                timeout=10,
            )
            assert refused_there.status_code == 429, (name, refused_there.text)
            assert envelope(refused_there.json(), 429), refused_there.text
            assert 50 <= int(refused_there.headers["Retry-After"]) <= 60
        refused = httpx.post(
            f"{api_url}/v1/events",
            json={"event": "FORGOT_PASSWORD", "contact": {"email": f"{key}-problem@example.com"}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert refused.json()["type"] == "/problems/rate-limited"
        for connection in (first, second):
            assert post_event(connection, other_token, f"{key}-other@example.com").status == 202
        scraped = scrape(api_url)
        assert events(scraped, "rate-limited") == 3
        assert [events(scraped, "rate-limited", name) for name, _, _ in DIALECTS] == [1] * len(DIALECTS)
    finally:
        stop(api)


def test_a_token_checked_before_the_body_is_charged_once_per_request(own_settings: Settings) -> None:
    # The token is authenticated before the body is read and FastAPI's dependency finds it done: a second charge
    # would take the second request over a burst of 2.
    settings = own_settings.model_copy(update={"rate_limit_per_minute": 1, "rate_limit_burst": 2})
    key = unique_workspace_key("once")
    with make_sessionmaker(settings).begin() as session:
        apply_spec(session, password_reset_spec(key))
        tokens = [make_token(session, key, ["events:write", "contacts:read"]) for _ in range(2)]
    cocomail = {"email": f"{key}@example.com", "identifier": "FORGOT_PASSWORD"}
    batch = {"events": [{"event": "FORGOT_PASSWORD", "contact": {"email": f"{key}@example.com"}}]}
    with TestClient(create_app(settings)) as client:
        for path, body, token in [
            ("/compat/cocomail/events/trigger", cocomail, tokens[0]),
            ("/v1/events/batch", batch, tokens[1]),
        ]:
            statuses = [
                client.post(path, json=body, headers={"Authorization": f"Bearer {token}"}).status_code for _ in range(3)
            ]
            assert statuses[:2] == [200 if "cocomail" in path else 202] * 2, (path, statuses)
            assert statuses[2] == 429

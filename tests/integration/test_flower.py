"""`tripmail flower` against the real broker: behind the login it is given, listing the running worker and its
tasks by id."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.builders import Tenant
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tests.support.stack import service_env, start_server, stop
from tripmail.config import Settings

AUTH = ("ops", "flower-password")

# Against the PostgreSQL stack alone, whose two workers Flower must both list; Flower never reads the database.
pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True, scope="session")


@pytest.fixture
def flower(workdir: Path, stack_settings: Settings, workers: list[str]) -> Iterator[str]:
    env = service_env(stack_settings) | {"TRIPMAIL_FLOWER_AUTH": ":".join(AUTH)}
    # Up once it asks for the login.
    process, url = start_server(["flower"], env, workdir / "flower.log", probe="/", status=401)
    yield url
    stop(process)


def test_flower_asks_for_its_login_and_lists_the_workers(flower: str, workers: list[str]) -> None:
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/api/workers", auth=("ops", "wrong"), timeout=10).status_code == 401

    def listed() -> dict[str, Any] | None:
        # Flower fills a worker's entry one inspect reply at a time: wait for the one that lists its tasks.
        workers: dict[str, Any] = httpx.get(f"{flower}/api/workers", auth=AUTH, timeout=30).json()
        return workers if workers and all("registered" in info for info in workers.values()) else None

    listing = wait_until(listed, what="flower listing the workers and their tasks")
    assert set(listing) == {f"{name}@tests" for name in workers}
    for info in listing.values():
        tasks = {"tripmail.process_events", "tripmail.deliver_messages", "tripmail.carry_on_runs"}
        assert tasks <= set(info["registered"])


def test_flower_refuses_to_serve_beyond_loopback_without_a_login(stack_settings: Settings) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "tripmail", "flower", "--host", "0.0.0.0"],
        env=service_env(stack_settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "without TRIPMAIL_FLOWER_AUTH=user:password" in refused.stderr


def test_flower_shows_tasks_by_event_id_never_their_data(flower: str, api_url: str, tenant: Tenant, sink: Sink) -> None:
    marker = "a-reset-link-flower-must-not-show"
    response = httpx.post(
        f"{api_url}/v1/events",
        json={"event": "FORGOT_PASSWORD", "contact": {"email": f"{tenant.key}@example.com"}, "data": {"link": marker}},
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    event_id = response.json()["id"]

    def shown() -> list[dict[str, Any]] | None:
        tasks = httpx.get(f"{flower}/api/tasks", auth=AUTH, timeout=30).json()
        mine = [task for task in tasks.values() if event_id in str(task.get("args"))]
        return mine or None

    # Flower turns on the worker's task events itself; the event's task shows once the worker receives it.
    [task] = wait_until(shown, timeout=60, what="flower listing the event's task")
    assert task["name"] == "tripmail.process_events"
    assert task["args"] == f"1 event: {event_id} (FORGOT_PASSWORD)"
    assert marker not in str(task)

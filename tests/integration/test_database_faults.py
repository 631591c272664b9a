"""The database away or locked while events flow, through real processes: the worker tries again with backoff for as
long as it lasts, and every accepted event is processed once, its email sent once, none failed.

Each test runs a stack of its own (see test_crashes.py). PostgreSQL is stopped and started for real, on a cluster of
the test's own: the session's cluster serves the other tests.
"""

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.support.builders import Tenant
from tests.support.event_posts import post_reset
from tests.support.message_states import statuses, workspace_messages_settled
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.postgres import Cluster, running_cluster
from tests.support.smtp_sink import Sink, running_sink
from tests.support.stack import OwnStack
from tripmail.config import Settings
from tripmail.migrations import upgrade
from tripmail.models import Event

# Celery's line for each try it schedules: "Task tripmail.process_events[<id>] retry: Retry in 1s: OperationalError(…".
RETRY = re.compile(r"Task (tripmail\.\w+)\[([0-9a-f-]+)\] retry: Retry in \d+s: (\w+)\((.*)")


def retries(log: Path, cause: str) -> Counter[str]:
    """How many times each task was scheduled to try again after an error whose text contains `cause`."""
    return Counter(
        match[2] for match in RETRY.finditer(log.read_text(errors="replace")) if cause in f"{match[3]}({match[4]}"
    )


def most_retries(log: Path, cause: str) -> int:
    """The most tries any one task was scheduled for."""
    return max(retries(log, cause).values(), default=0)


def ten_sent_and_one_held(stack: OwnStack, tenant: Tenant, emails: list[str], sink: Sink) -> None:
    """The first ten emails sent and recorded, then the eleventh handed over with its reply withheld at the sink."""
    for email in emails[:10]:
        post_reset(stack.api_url, tenant.token, email)
    wait_until(lambda: workspace_messages_settled(stack.db, tenant.key, 10), timeout=60, what="the first 10 sent")
    sink.hold_data.set()
    post_reset(stack.api_url, tenant.token, emails[10])
    wait_until(lambda: sink.held == 1, what="a message handed over, its reply withheld")


def every_email_sent_once(stack: OwnStack, tenant: Tenant, emails: list[str], sink: Sink) -> str:
    """Once every message is final: each sent, each email received once, each event processed; the worker's log."""
    final = wait_until(
        lambda: workspace_messages_settled(stack.db, tenant.key, len(emails)), timeout=90, what="every message"
    )
    assert final == {"sent": len(emails)}
    assert sink.recipients_from(tenant.sender) == dict.fromkeys(emails, 1)
    assert statuses(stack.db, tenant.key, of=Event) == {"processed": len(emails)}
    return (stack.workdir / "worker.log").read_text(errors="replace")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this test's own, to stop and start."""
    with running_cluster() as own:
        yield own


@pytest.fixture
def own_settings(request: pytest.FixtureRequest, own_settings: Settings) -> Settings:
    """The stack's settings, on the test's own PostgreSQL cluster when it asks for `cluster`.

    Retries wait a second at most, so an outage of seconds sees many of them. A task may take a minute, as long as
    the outage and more: what it sent is recorded once the database is back. The api keeps what it read of tokens
    and set-up for the whole test: its native path then needs no database, and accepts events while it is away.
    """
    changes: dict[str, object] = {
        "retry_backoff_max_s": 1,
        "task_time_limit_s": 60,
        "visibility_timeout_s": 120,
        "setup_cache_s": 600.0,
        "sqlite_lock_wait_s": 1.0,
    }
    if "cluster" in request.fixturenames:
        cluster: Cluster = request.getfixturevalue("cluster")
        changes["database_url"] = cluster.new_database()
        upgrade(str(changes["database_url"]))
    return own_settings.model_copy(update=changes)


@pytest.mark.timeout(180)
def test_postgresql_stopped_while_events_flow_loses_nothing_and_sends_nothing_twice(
    stack: OwnStack, cluster: Cluster
) -> None:
    tenant = stack.tenant("pgdown")
    emails = [f"{tenant.key}-{index}@example.com" for index in range(70)]
    log = stack.workdir / "worker.log"
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker()
        scheduler = stack.start_scheduler()
        # Stopped mid-delivery: the next message is handed over (committed) and sent, its reply withheld, so its
        # result comes back while the database is away. Its process keeps that result until it can write it down;
        # the worker's other process takes the events that keep coming.
        ten_sent_and_one_held(stack, tenant, emails, sink)
        cluster.stop_server()
        try:
            sink.hold_data.clear()
            for email in emails[11:]:
                post_reset(stack.api_url, tenant.token, email)  # 202: the api needs no database to accept
            # More tries of one task (9) than the 8 after which the worker used to give up and fail its events.
            wait_until(lambda: most_retries(log, "OperationalError") >= 9, timeout=60, what="nine tries of a task")
        finally:
            cluster.start_server()

        text = every_email_sent_once(stack, tenant, emails, sink)

    assert "connection" in text and "refused" in text  # what the tries met: the server gone
    assert " raised unexpected" not in text  # Celery's line for a task that failed for good
    assert "could not record the results of 1 message(s), trying again" in text
    assert scheduler.poll() is None
    assert "could not hand out what is due, trying again" in (stack.workdir / "scheduler.log").read_text()


# Another process's write transaction: it holds SQLite's one write lock until told to roll back (a line on stdin).
HOLD_WRITE_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
"""


@pytest.mark.timeout(120)
def test_sqlite_write_lock_held_by_another_process_delays_events_without_failing_them(stack: OwnStack) -> None:
    tenant = stack.tenant("locked")
    emails = [f"{tenant.key}-{index}@example.com" for index in range(40)]
    log = stack.workdir / "worker.log"
    path = stack.settings.database_url.removeprefix("sqlite:///")
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker()
        # Locked mid-delivery as well: a message handed over, its result coming back while the lock is held.
        ten_sent_and_one_held(stack, tenant, emails, sink)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_WRITE_LOCK, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            sink.hold_data.clear()
            for email in emails[11:]:
                post_reset(stack.api_url, tenant.token, email)
            # Each try waits sqlite_lock_wait_s (1 s) for the lock: six that met it are six such waits at least.
            locked = "database is locked"
            wait_until(lambda: sum(retries(log, locked).values()) >= 6, timeout=60, what="tries that met the lock")
        finally:
            holder.communicate("release\n", timeout=30)
        assert holder.returncode == 0

        text = every_email_sent_once(stack, tenant, emails, sink)

    assert " raised unexpected" not in text
    assert "could not record the results of 1 message(s), trying again" in text and "database is locked" in text


def test_the_api_answers_503_while_its_database_is_unreachable(redis_url: str) -> None:
    # Nothing listens on the port: the api's database is away, as when PostgreSQL is stopped.
    settings = Settings(
        database_url=f"postgresql+psycopg://tripmail@127.0.0.1:{free_port()}/tripmail", redis_url=redis_url
    )
    body = {"event": "FORGOT_PASSWORD", "contact": {"email": "ann@example.com"}}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/v1/events", json=body, headers={"Authorization": "Bearer tm_live_unknown"})
    assert (response.status_code, response.headers["content-type"]) == (503, "application/problem+json")
    assert (response.json()["type"], response.headers["Retry-After"]) == ("/problems/unavailable", "5")


def test_livez_answers_while_the_database_is_unreachable_and_readyz_names_it(redis_url: str) -> None:
    settings = Settings(
        database_url=f"postgresql+psycopg://tripmail@127.0.0.1:{free_port()}/tripmail", redis_url=redis_url
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        live = client.get("/livez")
        not_ready = client.get("/readyz")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert (not_ready.status_code, not_ready.headers["content-type"]) == (503, "application/problem+json")
    problem = not_ready.json()
    assert (problem["detail"], problem["field"]) == ("not ready: the database does not answer", "database")
    assert problem["errors"] == [{"field": "database", "message": "error: OperationalError"}]

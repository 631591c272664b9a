"""Redis hung, stopped and restarted under a running stack of the test's own: the api refuses events with 503 soon
and never hangs, /healthz names Redis, and every event it accepted is mailed once after Redis comes back from its
append-only file, to a worker that reconnected by itself; and a task Redis lost on its way to a worker is published
again by the scheduler (tripmail/queue/ledger.py)."""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import make_tenant, password_reset_spec, sender_of, unique_workspace_key
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.redis_server import start_redis
from tests.support.smtp_sink import running_sink
from tests.support.stack import start_api, start_scheduler, start_worker, stop
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.delivery.smtp import parse_smtp_url
from tripmail.queue import QUEUES, TRANSACTIONAL, ledger

# The bound: a client learns within this long that nothing was accepted (the api's own Redis timeout is a
# quarter of it, so a slow machine does not make the answer late).
ANSWER_WITHIN_S = 2.0


def reset_event(email: str, key: str) -> dict[str, object]:
    return {"event": "FORGOT_PASSWORD", "key": key, "contact": {"email": email}, "data": {"forgot_password_link": "x"}}


def timed_post(api_url: str, token: str, body: dict[str, object]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = httpx.post(f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return answer, time.monotonic() - started


@contextmanager
def paused(process: subprocess.Popen[bytes], *, group: bool = False) -> Iterator[None]:
    """The process (or its whole group) stopped: its sockets stay open and unanswered, as a hung host's do."""
    send = os.killpg if group else os.kill
    send(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        send(process.pid, signal.SIGCONT)


def drained(queue: Redis) -> bool:
    """No task waiting and none delivered but unacknowledged: nothing left that Redis could hand out again."""
    return all(queue.llen(name) == 0 for name in QUEUES.values()) and queue.hlen("unacked") == 0


def assert_refused_in_time(answer: httpx.Response, took_s: float) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/unavailable"
    assert took_s < ANSWER_WITHIN_S, f"answered after {took_s:.2f} s"


@pytest.mark.timeout(240)
def test_redis_hung_stopped_and_restarted_loses_nothing_sends_nothing_twice_and_never_hangs_the_api(
    own_settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "redis").mkdir()
    redis_log = tmp_path / "redis.log"
    redis_port = free_port()
    # The api's default Redis timeout, which the 2 s bound is about (test stacks wait longer on a loaded machine).
    default_timeout_s = Settings.model_fields["api_redis_timeout_s"].default
    settings = own_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{redis_port}/0", "api_redis_timeout_s": default_timeout_s}
    )
    key = unique_workspace_key("redis-outage")
    sender = sender_of(key)
    db: sessionmaker[Session] = make_sessionmaker(settings)
    token = make_tenant(db, password_reset_spec(key)).token
    emails = [f"{key}-{index}@example.com" for index in range(60)]
    redis = start_redis(redis_port, redis_log, aof_dir=tmp_path / "redis")
    queue = Redis.from_url(settings.redis_url)
    api, api_url = start_api(settings, tmp_path)
    worker = start_worker(settings, tmp_path)
    try:
        with running_sink(parse_smtp_url(settings.smtp_url.get_secret_value()).port) as sink:
            # Before: the worker consumes.
            for index in range(10):
                assert timed_post(api_url, token, reset_event(emails[index], f"reset-{index}"))[0].status_code == 202
            wait_until(lambda: sink.count_from(sender) == 10, timeout=60, what="the first ten emails")

            # Hung: every request answered in time, several at once included (the rate limit's check runs on the
            # event loop), and /healthz says which dependency it is.
            with paused(redis), ThreadPoolExecutor(max_workers=8) as pool:
                hung = list(
                    pool.map(
                        lambda index: timed_post(api_url, token, reset_event(emails[index], f"hung-{index}")),
                        range(8),
                    )
                )
                started = time.monotonic()
                health = httpx.get(f"{api_url}/healthz", timeout=30)
                health_took_s = time.monotonic() - started
            for answer, took_s in hung:
                assert_refused_in_time(answer, took_s)
            assert health.status_code == 503
            assert health_took_s < ANSWER_WITHIN_S
            assert health.json()["redis"].startswith("error: ")
            assert health.json()["database"] == "ok"

            # Queued when Redis goes down: the worker is held, so the accepted events wait in Redis for the restart.
            with paused(worker, group=True):
                queued = [
                    timed_post(api_url, token, reset_event(emails[index], f"reset-{index}"))[0]
                    for index in range(10, 40)
                ]
                redis.terminate()
                redis.wait(timeout=10)
                down, took_s = timed_post(api_url, token, reset_event(emails[40], "reset-40"))
                health_down = httpx.get(f"{api_url}/healthz", timeout=30)
                redis = start_redis(redis_port, redis_log, aof_dir=tmp_path / "redis")
            assert [answer.status_code for answer in queued] == [202] * 30
            assert_refused_in_time(down, took_s)
            assert health_down.status_code == 503
            assert health_down.json()["redis"].startswith("error: ")

            # Back: the api answers again, the refused key was not kept as a duplicate, and the same worker
            # (never restarted) delivers what waited in the append-only file and what comes now.
            after = [timed_post(api_url, token, reset_event(emails[40], "reset-40"))[0]]
            after += [
                timed_post(api_url, token, reset_event(emails[index], f"reset-{index}"))[0] for index in range(41, 60)
            ]
            assert [answer.status_code for answer in after] == [202] * 20
            assert after[0].json()["duplicate"] is False
            assert httpx.get(f"{api_url}/healthz", timeout=30).status_code == 200
            wait_until(lambda: sink.count_from(sender) >= 60, timeout=120, what="every accepted email")
            # A task the held worker had taken when Redis went away comes back after the visibility timeout; only
            # once none is left could nothing more arrive.
            wait_until(lambda: drained(queue), timeout=60, what="the queue drained")
            assert worker.poll() is None
            received = sink.recipients_from(sender)
    finally:
        for process in (worker, api, redis):
            if process.poll() is None:
                stop(process)
        db.kw["bind"].dispose()
        queue.close()

    assert set(received) == set(emails)
    assert set(received.values()) == {1}


def test_a_task_redis_lost_between_its_pop_and_its_unacked_record_is_published_again(
    own_settings: Settings, tmp_path: Path
) -> None:
    settings = own_settings.model_copy(update={"task_lost_after_s": 1.0})
    tenant_key = unique_workspace_key("lost-task")
    db: sessionmaker[Session] = make_sessionmaker(settings)
    token = make_tenant(db, password_reset_spec(tenant_key)).token
    queue = Redis.from_url(settings.redis_url)
    api, api_url = start_api(settings, tmp_path)
    started = [api]
    try:
        accepted = timed_post(api_url, token, reset_event(f"{tenant_key}@example.com", "lost-1"))[0]
        assert accepted.status_code == 202, accepted.text
        # What kombu's BRPOP does before the worker records the task as unacknowledged: the worker dies here, or
        # its connection breaks with the reply unread, and the task is in Redis no more.
        # A password reset: its task waits in the fast lane, and is published again there.
        assert queue.rpop(QUEUES[TRANSACTIONAL]) is not None
        assert queue.llen(QUEUES[TRANSACTIONAL]) == 0
        with running_sink(parse_smtp_url(settings.smtp_url.get_secret_value()).port) as sink:
            started += [start_worker(settings, tmp_path), start_scheduler(settings, tmp_path)]
            wait_until(lambda: sink.count_from(sender_of(tenant_key)) >= 1, timeout=60, what="the lost event's email")
            wait_until(lambda: queue.hlen(ledger.TASKS) == 0, timeout=30, what="the ledger to empty")

            # A task a worker holds (unacknowledged, its reply withheld at DATA) for several times the lost-after
            # time is not taken for lost: publishing it again would run its delivery a second time beside it.
            sink.hold_data.set()
            held = timed_post(api_url, token, reset_event(f"held-{tenant_key}@example.com", "held-1"))[0]
            assert held.status_code == 202, held.text
            wait_until(lambda: sink.held == 1, timeout=60, what="the held message's DATA")
            time.sleep(4 * settings.task_lost_after_s)  # the scheduler looks every quarter of it: 16 looks
            sink.hold_data.clear()
            wait_until(lambda: sink.count_from(sender_of(tenant_key)) >= 2, timeout=60, what="the held email")
            wait_until(lambda: queue.hlen(ledger.TASKS) == 0, timeout=30, what="the ledger to empty again")
            received = sink.recipients_from(sender_of(tenant_key))
    finally:
        for process in started:
            if process.poll() is None:
                stop(process)
        db.kw["bind"].dispose()
        queue.close()

    assert received == {f"{tenant_key}@example.com": 1, f"held-{tenant_key}@example.com": 1}
    assert (tmp_path / "scheduler.log").read_text().count("is nowhere in Redis: publishing it again") == 1


def test_livez_answers_while_redis_is_down_and_readyz_names_redis(own_settings: Settings, tmp_path: Path) -> None:
    redis_port = free_port()
    settings = own_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis_port}/0"})
    redis = start_redis(redis_port, tmp_path / "redis.log")
    api, api_url = start_api(settings, tmp_path)
    try:
        ready = httpx.get(f"{api_url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ok", "redis": "ok", "database": "ok"}

        redis.terminate()
        redis.wait(timeout=10)
        live = httpx.get(f"{api_url}/livez", timeout=30)
        not_ready = httpx.get(f"{api_url}/readyz", timeout=30)
        health = httpx.get(f"{api_url}/healthz", timeout=30)

        redis = start_redis(redis_port, tmp_path / "redis.log")
        ready_again = httpx.get(f"{api_url}/readyz", timeout=30)
    finally:
        for process in (api, redis):
            if process.poll() is None:
                stop(process)

    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert not_ready.status_code == 503
    assert not_ready.headers["content-type"] == "application/problem+json"
    problem = not_ready.json()
    assert (problem["type"], problem["detail"], problem["field"]) == (
        "/problems/unavailable",
        "not ready: Redis does not answer",
        "redis",
    )
    [down] = problem["errors"]
    assert down["field"] == "redis" and down["message"].startswith("error: ")
    # /healthz answers as it always has.
    assert (health.status_code, health.json()["redis"][:7], health.json()["database"]) == (503, "error: ", "ok")
    assert ready_again.status_code == 200, ready_again.text

"""The ingest path under concurrency and outages: requests share tasks, and nothing is lost or claimed for nothing."""

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis

from api.app import create_app
from api.enqueue import (
    BUSY_FLUSH_EVENTS,
    CLAIM_UNTIL_QUEUED_S,
    Answer,
    Checked,
    Enqueuer,
    _claim_keys,
    claim_value,
    dedupe_key,
    enqueue_once,
)
from tests.support.builders import make_tenant, password_reset_spec
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.smtp_sink import running_sink
from tests.support.stack import OwnStack
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.errors import KeyReused, Unavailable
from tripmail.queue import BULK, QUEUES, TRANSACTIONAL, ledger, make_celery
from tripmail.schemas.accepted import Accepted
from tripmail.schemas.trigger import Audience, TriggerRequest


def reset_event(email: str, key: str) -> dict[str, object]:
    return {"event": "FORGOT_PASSWORD", "key": key, "contact": {"email": email}, "data": {"forgot_password_link": "x"}}


def post_event(api_url: str, token: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_concurrent_requests_share_tasks_and_each_email_arrives_once(stack: OwnStack) -> None:
    tenant = stack.tenant("coalesce")
    emails = [f"{tenant.key}-{index}@example.com" for index in range(40)]
    bodies = [reset_event(email, key=f"order-{index}") for index, email in enumerate(emails)]
    bodies.append(reset_event(emails[0], key="order-0"))  # the same key as the first: one of the two is a duplicate
    queue = Redis.from_url(stack.settings.redis_url)
    # Writes wait for a second: the first flush is held on its claims while the other requests come in.
    queue.client_pause(1000, all=False)
    with ThreadPoolExecutor(len(bodies)) as clients:
        answers = list(clients.map(lambda body: post_event(stack.api_url, tenant.token, body), bodies))

    assert [answer.status_code for answer in answers] == [202] * len(bodies)
    first, repeat = sorted((answers[0].json(), answers[-1].json()), key=lambda answer: answer["duplicate"])
    assert (first["duplicate"], repeat["duplicate"], repeat["id"]) == (False, True, first["id"])
    assert len({answer.json()["id"] for answer in answers}) == len(emails)
    # No worker is running yet, so every task published is still in the queue.
    tasks = queue.llen(QUEUES[TRANSACTIONAL])  # password resets: the fast lane
    assert 1 <= tasks < len(emails)
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker()
        wait_until(lambda: sink.count_from(tenant.sender) >= len(emails), timeout=60, what="every email")
        wait_until(lambda: queue.llen(QUEUES[TRANSACTIONAL]) == 0, what="the queue to drain")
        assert sink.recipients_from(tenant.sender) == dict.fromkeys(emails, 1)


def test_a_failed_publish_answers_unavailable_and_gives_the_keys_back(own_settings: Settings) -> None:
    store = Redis.from_url(own_settings.redis_url, decode_responses=True)
    trigger = TriggerRequest(workspace_id=1, event="SIGNED_UP", key="k-1", audience=Audience(email="a@example.com"))
    checked = Checked(trigger, event_type=None, matching=1, transactional=False)
    other = trigger.model_copy(update={"audience": Audience(email="b@example.com")})
    reused = Checked(other, event_type=None, matching=1, transactional=False)

    async def three_requests(broker_url: str) -> tuple[list[Answer], ...]:
        enqueuer = Enqueuer(store, make_celery(Settings(redis_url=broker_url)))
        try:
            # All are pending before the first flush starts: they share it, and the others repeat the key.
            return tuple(await asyncio.gather(*(enqueuer.enqueue([item]) for item in (checked, checked, reused))))
        finally:
            await enqueuer.close()

    [first], [repeat], [refused] = asyncio.run(three_requests(f"redis://127.0.0.1:{free_port()}/0"))
    assert isinstance(first, Unavailable)
    assert isinstance(repeat, Unavailable)  # not a duplicate of an event that was never queued
    assert isinstance(refused, Unavailable)  # nor refused for one
    assert store.get(dedupe_key(trigger)) is None

    [first], [repeat], [refused] = asyncio.run(three_requests(own_settings.redis_url))
    assert isinstance(first, Accepted) and isinstance(repeat, Accepted)
    assert (first.duplicate, repeat.duplicate, repeat.id) == (False, True, first.id)
    assert isinstance(refused, KeyReused) and refused.first_event_id == first.id


def test_a_claim_its_failed_enqueue_could_not_give_back_makes_no_duplicate_of_it(own_settings: Settings) -> None:
    # `make reliability` lost 500 events so: Redis stopped between a flush's claim and its publish, and was still
    # away for the release; the client's retry of the batch, once Redis was back, was answered "duplicate" of
    # events that were never queued.
    store = Redis.from_url(own_settings.redis_url, decode_responses=True)
    store.delete("celery")
    trigger = TriggerRequest(workspace_id=1, event="SIGNED_UP", key="k-left", audience=Audience(email="a@example.com"))
    checked = Checked(trigger, event_type=None, matching=1, transactional=False)
    [first] = _claim_keys(store, [checked.claim], ["never-queued"], [checked])  # claimed; publish and release failed
    assert first is None

    [retry] = enqueue_once(store, make_celery(own_settings), [checked])
    assert isinstance(retry, Unavailable)  # not Accepted(id="never-queued", duplicate=True)
    assert store.llen("celery") == 0

    store.delete(dedupe_key(trigger))  # the short claim lapsed
    [retry] = enqueue_once(store, make_celery(own_settings), [checked])
    assert isinstance(retry, Accepted) and not retry.duplicate
    assert store.get(dedupe_key(trigger)) == claim_value(retry.id, checked.content) and store.llen("celery") == 1
    [repeat] = enqueue_once(store, make_celery(own_settings), [checked])
    assert isinstance(repeat, Accepted) and (repeat.duplicate, repeat.id) == (True, retry.id)


def test_keys_of_one_flush_are_claimed_in_order_and_held_for_their_window_once_queued(own_settings: Settings) -> None:
    store = Redis.from_url(own_settings.redis_url, decode_responses=True)

    def checked(key: str | None) -> Checked:
        trigger = TriggerRequest(workspace_id=1, event="SIGNED_UP", key=key, audience=Audience(email="a@example.com"))
        return Checked(trigger, event_type=None, matching=1, transactional=False)

    flush = [checked(None), checked("k-held"), checked(None), checked("k-held")]
    answers = enqueue_once(store, make_celery(own_settings), flush)
    assert all(isinstance(answer, Accepted) for answer in answers)
    keyless, first, other, repeat = (answer for answer in answers if isinstance(answer, Accepted))
    assert [answer.duplicate for answer in (keyless, first, other, repeat)] == [False, False, False, True]
    assert repeat.id == first.id and len({keyless.id, first.id, other.id}) == 3
    claim = dedupe_key(flush[1].trigger)
    assert store.get(claim) == claim_value(first.id, flush[1].content)
    assert store.ttl(claim) > CLAIM_UNTIL_QUEUED_S  # the default window (a day), no longer the short claim


def test_an_event_from_rest_waits_briefly_for_company_in_its_task(own_settings: Settings) -> None:
    store = Redis.from_url(own_settings.redis_url, decode_responses=True)
    store.delete("celery")

    def checked(key: str) -> Checked:
        trigger = TriggerRequest(workspace_id=1, event="SIGNED_UP", key=key, audience=Audience(email="a@example.com"))
        return Checked(trigger, event_type=None, matching=1, transactional=False)

    async def two_requests_apart(wait_s: float) -> None:
        enqueuer = Enqueuer(store, make_celery(own_settings), wait_s=wait_s)
        try:
            first = asyncio.create_task(enqueuer.enqueue([checked(f"first-{wait_s}")]))
            await asyncio.sleep(0.05)
            await asyncio.gather(first, enqueuer.enqueue([checked(f"second-{wait_s}")]))
        finally:
            await enqueuer.close()

    asyncio.run(two_requests_apart(wait_s=0.0))
    assert store.llen("celery") == 2
    asyncio.run(two_requests_apart(wait_s=0.5))
    assert store.llen("celery") == 3

    async def two_requests_apart_after_a_busy_flush() -> None:
        enqueuer = Enqueuer(store, make_celery(own_settings), wait_s=0.5)
        try:
            await enqueuer.enqueue([checked(f"busy-{index}") for index in range(BUSY_FLUSH_EVENTS)])
            first = asyncio.create_task(enqueuer.enqueue([checked("after-busy-first")]))
            await asyncio.sleep(0.05)
            await asyncio.gather(first, enqueuer.enqueue([checked("after-busy-second")]))
        finally:
            await enqueuer.close()

    store.delete("celery")
    # The busy flush waited (nothing came before it); the first request after it did not, so it went alone.
    asyncio.run(two_requests_apart_after_a_busy_flush())
    assert store.llen("celery") == 3


def test_a_flush_enqueues_a_task_per_lane_each_with_its_own_events_only(own_settings: Settings) -> None:
    store = Redis.from_url(own_settings.redis_url, decode_responses=True)

    def checked(key: str, *, transactional: bool) -> Checked:
        trigger = TriggerRequest(workspace_id=1, event="SIGNED_UP", key=key, audience=Audience(email="a@example.com"))
        return Checked(trigger, event_type=None, matching=1, transactional=transactional)

    flush = [
        checked("news-1", transactional=False),
        checked("reset-1", transactional=True),
        checked("news-2", transactional=False),
        checked("reset-2", transactional=True),
    ]
    answers = enqueue_once(store, make_celery(own_settings), flush)
    ids = [answer.id for answer in answers if isinstance(answer, Accepted)]
    assert len(ids) == 4

    def waiting(lane: str) -> list[tuple[list[str], str | None]]:
        """Each task waiting in the lane: its events' ids, and the queue the ledger recorded for it."""
        tasks = [json.loads(raw) for raw in store.lrange(QUEUES[lane], 0, -1)]
        entries = [json.loads(store.hget(ledger.TASKS, task["headers"]["id"]) or "{}") for task in tasks]
        return [([pair[0] for pair in entry["args"][0]], entry["queue"]) for entry in entries]

    assert waiting(TRANSACTIONAL) == [([ids[1], ids[3]], QUEUES[TRANSACTIONAL])]
    assert waiting(BULK) == [([ids[0], ids[2]], QUEUES[BULK])]


def test_healthz_is_answered_while_a_large_authenticated_body_is_parsed(
    own_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = make_sessionmaker(own_settings)
    token = make_tenant(sessions, password_reset_spec("big")).token
    sessions.kw["bind"].dispose()
    big = json.dumps({"event": "FORGOT_PASSWORD", "contact": {"email": "a@example.com"}, "data": {"x": "y" * 2**20}})
    order: list[str] = []
    parsing, parsed = threading.Event(), threading.Event()
    loads = json.loads

    def loads_held_until_healthz_answers(document: str | bytes, **options: Any) -> Any:
        """json.loads, which holds the big body's parse until the test lets it go on."""
        if len(document) >= len(big):
            order.append("parse started")
            parsing.set()
            parsed.wait(timeout=20)  # a parse on the event loop holds /healthz this long, then the order says so
            order.append("parse ended")
        return loads(document, **options)

    monkeypatch.setattr(json, "loads", loads_held_until_healthz_answers)
    with TestClient(create_app(own_settings)) as client, ThreadPoolExecutor(1) as poster:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        posted = poster.submit(client.post, "/v1/events", content=big, headers=headers)
        assert parsing.wait(timeout=30), "the big body's parse never started"
        healthz = client.get("/healthz")
        order.append("healthz answered")
        parsed.set()
        assert posted.result().status_code == 202
    assert healthz.status_code == 200
    assert order == ["parse started", "healthz answered", "parse ended"]

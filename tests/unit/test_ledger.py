"""The ledger of published tasks (tripmail/queue/ledger.py) against fakeredis: what a sweep takes for lost, and what
not."""

import json
from typing import Any

import fakeredis

from tripmail import queue
from tripmail.queue import ledger

T0 = 1_800_000_000.0
LOST_AFTER_S = 60.0
QUEUES = list(queue.QUEUES.values())
FAST_LANE, BULK = queue.QUEUES[queue.TRANSACTIONAL], queue.QUEUES[queue.BULK]


def kombu_message(task_id: str) -> dict[str, Any]:
    """The part of a message as kombu's Redis transport keeps it that the sweep reads."""
    return {"body": "...", "headers": {"id": task_id, "task": "tripmail.process_events"}}


def queued(task_id: str) -> str:
    return json.dumps(kombu_message(task_id))


def unacked(task_id: str, routing_key: str = BULK) -> str:
    # As kombu's QoS.append writes it: the message itself (not its JSON), its exchange and its routing key.
    return json.dumps([kombu_message(task_id), "", routing_key])


Published = tuple[str, str, Any, Any, str | None]


def sweep_twice(store: fakeredis.FakeRedis, now: float) -> list[Published]:
    published: list[Published] = []
    sweep = ledger.LostTaskSweep(store, lambda *task: published.append(task), queues=QUEUES, lost_after_s=LOST_AFTER_S)
    assert sweep.sweep(now=now) == 0  # the first sighting only makes it a suspect
    sweep.sweep(now=now + 1)
    return published


def test_a_task_nowhere_in_redis_is_published_again_with_its_id_name_arguments_and_queue() -> None:
    store = fakeredis.FakeRedis()
    ledger.record(store, "lost", "tripmail.process_events", [[["e1", {"event": "X"}]]], {}, queue=FAST_LANE, now=T0)

    assert sweep_twice(store, T0 + LOST_AFTER_S) == [
        ("lost", "tripmail.process_events", [[["e1", {"event": "X"}]]], {}, FAST_LANE)
    ]


def test_a_task_recorded_without_a_queue_is_published_again_to_the_default_one() -> None:
    # As a version without lanes recorded it: its task went to Celery's default queue, the bulk lane's.
    store = fakeredis.FakeRedis()
    entry = {"task": "tripmail.deliver_messages", "args": [[1]], "kwargs": {}}
    store.hset(ledger.TASKS, "old", json.dumps(entry))
    store.zadd(ledger.PUBLISHED_AT, {"old": T0})

    assert sweep_twice(store, T0 + LOST_AFTER_S) == [("old", "tripmail.deliver_messages", [[1]], {}, None)]


def test_tasks_waiting_held_unacknowledged_young_or_finished_are_left_alone() -> None:
    store = fakeredis.FakeRedis()
    for task_id in ("waiting", "waiting-fast", "held", "held-fast", "finished"):
        lane = FAST_LANE if task_id.endswith("fast") else BULK
        ledger.record(store, task_id, "tripmail.deliver_messages", [[1, 2]], {}, queue=lane, now=T0)
    ledger.record(store, "young", "tripmail.deliver_messages", [[3]], {}, queue=BULK, now=T0 + 30)
    store.lpush(BULK, queued("waiting"))
    # Waiting in the fast lane, behind nothing, while a fan-out fills the bulk lane: not lost either.
    store.lpush(FAST_LANE, queued("waiting-fast"))
    store.hset(ledger.UNACKED, "tag-1", unacked("held"))
    store.hset(ledger.UNACKED, "tag-2", unacked("held-fast", FAST_LANE))
    ledger.forget(store, "finished")

    assert sweep_twice(store, T0 + LOST_AFTER_S) == []
    assert store.hlen(ledger.TASKS) == 5


def test_a_task_seen_missing_once_then_found_held_is_not_published() -> None:
    store = fakeredis.FakeRedis()
    published: list[Published] = []
    sweep = ledger.LostTaskSweep(store, lambda *task: published.append(task), queues=QUEUES, lost_after_s=LOST_AFTER_S)
    ledger.record(store, "moving", "tripmail.process_events", [[]], {}, queue=BULK, now=T0)
    # Between kombu's BRPOP and its record as unacknowledged, a task is in neither place for a moment.
    sweep.sweep(now=T0 + LOST_AFTER_S)
    store.hset(ledger.UNACKED, "tag-1", unacked("moving"))
    sweep.sweep(now=T0 + LOST_AFTER_S + 1)
    sweep.sweep(now=T0 + LOST_AFTER_S + 2)

    assert published == []


def test_a_task_finished_between_two_sweeps_is_dropped_not_published() -> None:
    store = fakeredis.FakeRedis()
    published: list[Published] = []
    sweep = ledger.LostTaskSweep(store, lambda *task: published.append(task), queues=QUEUES, lost_after_s=LOST_AFTER_S)
    ledger.record(store, "done", "tripmail.process_events", [[]], {}, queue=BULK, now=T0)
    sweep.sweep(now=T0 + LOST_AFTER_S)
    # Its worker forgot the hash entry, but the index entry stayed (a forget half done).
    store.hdel(ledger.TASKS, "done")
    sweep.sweep(now=T0 + LOST_AFTER_S + 1)

    assert published == []
    assert store.zcard(ledger.PUBLISHED_AT) == 0

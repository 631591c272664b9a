"""The Celery app both processes build, the task names that are the only link between them, and the lanes (Celery
queues) tasks wait in."""

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import before_task_publish

from tripmail.config import Settings
from tripmail.queue.ledger import LedgerAMQP

# Takes a list of [event id, trigger] pairs: one event from the single-event endpoints, many from a batch.
PROCESS_EVENTS = "tripmail.process_events"
DELIVER_MESSAGES = "tripmail.deliver_messages"
# Takes a list of automation run ids whose wait is over (from the scheduler).
CARRY_ON_RUNS = "tripmail.carry_on_runs"
# Takes a list of webhook delivery ids that are due (from the scheduler).
FIRE_WEBHOOKS = "tripmail.fire_webhooks"

# Transactional mail (a password reset) waits in a lane of its own, so a marketing fan-out of 100,000 messages queued
# before it never delays it; a worker can serve that lane alone (`tripmail worker --queues transactional`).
TRANSACTIONAL = "transactional"
BULK = "bulk"
# Each lane's Celery queue (the Redis list its tasks wait in), fast lane first. Bulk is Celery's default queue: the
# tasks a version without lanes left queued at an upgrade, or still publishes during a rolling one, run as bulk.
QUEUES = {TRANSACTIONAL: "transactional", BULK: "celery"}


def queue_for(*, transactional: bool) -> str:
    """The Celery queue of the lane for work that sends transactional mail, or not."""
    return QUEUES[TRANSACTIONAL if transactional else BULK]


@dataclass
class ByLane:
    """Ids of work to hand to workers (messages, runs, webhook deliveries), by the lane each waits in."""

    transactional: list[int] = field(default_factory=list)
    bulk: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, ids: list[int], *, transactional: bool) -> "ByLane":
        return cls(transactional=ids) if transactional else cls(bulk=ids)

    @classmethod
    def split(cls, rows: Iterable[tuple[int, bool]]) -> "ByLane":
        """From (id, whether it is transactional) pairs, in their order."""
        split = cls()
        for item, transactional in rows:
            (split.transactional if transactional else split.bulk).append(item)
        return split

    @property
    def ids(self) -> list[int]:
        return self.transactional + self.bulk

    def extend(self, other: "ByLane") -> None:
        self.transactional += other.transactional
        self.bulk += other.bulk

    def lanes(self) -> Iterator[tuple[bool, list[int]]]:
        """(transactional, ids) of each lane with ids, fast lane first."""
        yield from (
            (transactional, ids) for transactional, ids in ((True, self.transactional), (False, self.bulk)) if ids
        )


# A run or webhook delivery the scheduler handed to a worker (or a worker claimed) that has no outcome after this
# long is handed out again: its task was lost with the worker, or with Redis. Handing one out twice is harmless,
# as only one transaction takes it.
HAND_OUT_AGAIN_AFTER = timedelta(seconds=60)


def make_celery(settings: Settings) -> Celery:
    # Tasks of a worker that died unacked come back after the visibility timeout, found by a sweep of the
    # unacked set; a sweep every tenth of the timeout (kombu's default: every 100 s) brings them back soon after.
    restore_sweep_s = max(1, min(100, settings.visibility_timeout_s // 10))
    restore_interval_s = min(10, restore_sweep_s)
    app = Celery("tripmail", broker=settings.redis_url, amqp=LedgerAMQP)
    app.conf.update(
        # At-least-once: ack only after the task ran, and requeue when its process died under it.
        # Handlers are idempotent (event id primary key, message claim), so a second run is harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One reserved task per process: a busy or dying worker strands at most that one.
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # The hard limit stays below the visibility timeout, so Redis never redelivers a task still running.
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_timeout": 30,
            "socket_keepalive": True,
            "health_check_interval": 25,
            "unacked_restore_interval": restore_interval_s,
            "unacked_restore_throttle": restore_sweep_s // restore_interval_s,
            # A sweep holds a lock in Redis for its few milliseconds; a worker killed during one left it held for
            # kombu's default 300 s, and no worker brought any task back until it lapsed (seen in a kill -9 test).
            # Two sweeps overlapping after 10 s at worst requeue a task twice, which the handlers absorb.
            "unacked_mutex_expire": 10,
            # A worker on both lanes asks Redis for the fast lane's tasks first, every time, rather than taking from
            # each lane in turn (kombu's default): a transactional task waits only for a free pool process.
            "queue_order_strategy": "priority",
        },
        task_default_queue=QUEUES[BULK],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A late-ack task cannot be acked over a lost connection; it is redelivered, so stop running it here.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        # Task events (received, started, succeeded, failed) from the start, for Flower: without them it lists the
        # workers but no tasks until it has asked each worker to send them.
        worker_send_task_events=True,
    )
    return app


def make_publisher(settings: Settings) -> Celery:
    """The api's Celery app: it publishes only, and gives up on Redis after `api_redis_timeout_s`.

    A client waits on the publish, so a hung Redis must cost it a 503 soon, not the workers' 30 s socket timeout
    times Celery's three publish retries (kombu's connection pool would then also block every later request).
    No retry either: the claim before it has just been answered by Redis, and redis-py reconnects a connection
    left stale by a Redis restart by itself.
    """
    app = make_celery(settings)
    app.conf.broker_transport_options = app.conf.broker_transport_options | {
        "socket_timeout": settings.api_redis_timeout_s,
        "socket_connect_timeout": settings.api_redis_timeout_s,
    }
    app.conf.task_publish_retry_policy = {"max_retries": 0}
    return app


# How many ids a task's description names before it only counts the rest.
DESCRIBED_IDS = 5


def describe(task: str, args: Sequence[Any]) -> str | None:
    """What Flower and the worker's log show of a task's arguments: ids and counts, never the events' data,
    contacts or attachments (Celery would show the start of their repr). None for a task it does not know."""
    if not args or not isinstance(args[0], list):
        return None
    items = args[0]
    if task == PROCESS_EVENTS:
        named = [
            f"{pair[0]} ({pair[1].get('event') or 'automation ' + str(pair[1].get('automation_id'))})"
            for pair in items[:DESCRIBED_IDS]
        ]
        what = ("event", "events")
    elif task in _ID_LISTS:
        named = [str(item) for item in items[:DESCRIBED_IDS]]
        what = _ID_LISTS[task]
    else:
        return None
    more = f" and {len(items) - DESCRIBED_IDS} more" if len(items) > DESCRIBED_IDS else ""
    return f"{len(items)} {what[len(items) != 1]}: {', '.join(named)}{more}"


_ID_LISTS = {
    DELIVER_MESSAGES: ("message", "messages"),
    CARRY_ON_RUNS: ("run", "runs"),
    FIRE_WEBHOOKS: ("webhook delivery", "webhook deliveries"),
}


# The header with the time a task was published, which the queue-age metric reads off the oldest waiting task.
PUBLISHED_AT = "tripmail_published_at"


def _on_publish(sender: str | None = None, body: Any = None, headers: Any = None, **_: Any) -> None:
    # Every publisher passes here (the api, a task's retry, the scheduler, the CLI), so no path can leak data.
    if sender is None or not isinstance(headers, dict):
        return
    headers[PUBLISHED_AT] = time.time()
    if not isinstance(body, tuple | list) or not body:
        return
    described = describe(sender, body[0])
    if described is not None:
        headers["argsrepr"] = described


before_task_publish.connect(_on_publish)

"""A copy of every task published, kept in Redis until a worker finished it, so a task Redis lost is published again.

Celery's Redis transport takes a task off the queue (BRPOP) and only then, in a second command, records it as
unacknowledged: a worker killed between the two, or a connection that broke with the reply unread, loses the task
(celery/kombu#305, celery/celery#4354), as `make reliability` shows without this ledger under kill -9 and Redis
restarts (bench/results.md, What the code's shape rests on). Events live only in their task until a worker records
them, so nothing else can bring them back.

Every publish first writes the task's name, arguments and queue here (the same Redis, the producer's own
connection); a worker forgets it once the task succeeded or failed for good. `tripmail scheduler` publishes again,
with the same task id and to the same queue, an entry older than `task_lost_after_s` that is neither waiting in any
queue nor unacknowledged, when it finds it so twice in a row (a task between its BRPOP and its record is in neither
for a moment). A task run twice is harmless: every handler is idempotent (event ids, message claims).
"""

import json
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from celery.app.amqp import AMQP
from kombu.exceptions import OperationalError
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

TASKS = "tripmail:published"
PUBLISHED_AT = "tripmail:published:at"
# kombu's name for its set of unacknowledged tasks, of every queue (transport.redis default).
UNACKED = "unacked"
# Looked at per sweep, oldest first.
SWEEP_LIMIT = 1000


def record(store: Redis, task_id: str, name: str, args: Any, kwargs: Any, *, queue: str | None, now: float) -> None:
    """`queue`: the Celery queue it is published to; None for the default one."""
    pipe = store.pipeline(transaction=False)
    pipe.hset(TASKS, task_id, json.dumps({"task": name, "args": args, "kwargs": kwargs, "queue": queue}))
    pipe.zadd(PUBLISHED_AT, {task_id: now})
    pipe.execute()


def forget(store: Redis, task_id: str) -> None:
    pipe = store.pipeline(transaction=False)
    forget_in(pipe, task_id)
    pipe.execute()


def forget_in(pipe: Pipeline, task_id: str) -> None:
    """Queue forgetting the task on a pipeline that carries other commands, to share its round trip."""
    pipe.hdel(TASKS, task_id)
    pipe.zrem(PUBLISHED_AT, task_id)


class LedgerAMQP(AMQP):  # type: ignore[misc]
    """Celery's publisher with the ledger: a task is recorded before it is published, and forgotten again when the
    publish failed (the client is told nothing was accepted)."""

    def _create_task_sender(self) -> Callable[..., Any]:
        send = super()._create_task_sender()

        def send_recorded(producer: Any, name: str, message: Any, **options: Any) -> Any:
            headers, _properties, body, _sent_event = message
            task_id = headers["id"]
            args, kwargs, _embed = body
            store = producer.channel.client
            # Celery's router has made a queue name (a task's retry, a send_task) into kombu's Queue.
            queue = options.get("queue")
            try:
                record(store, task_id, name, args, kwargs, queue=getattr(queue, "name", queue), now=time.time())
            except RedisError as exc:
                # As a publish that failed: callers answer 503 or retry, as they do for the broker's own errors.
                raise OperationalError(f"could not record task {task_id} before publishing it: {exc}") from exc
            try:
                return send(producer, name, message, **options)
            except BaseException:
                try:
                    forget(store, task_id)
                except RedisError:
                    log.warning("could not forget task %s after its publish failed", task_id)
                raise

        return send_recorded


def _task_id(message: Any) -> str | None:
    """The id of a kombu message: queued, its JSON; in an unacked entry, the message itself (a dict)."""
    try:
        if isinstance(message, str | bytes):
            message = json.loads(message)
        return str(message["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return None


def _in_hand(store: Redis, queues: Collection[str]) -> set[str]:
    """Ids of the tasks waiting in the queues, then of those a worker holds unacknowledged (a task moves that way)."""
    waiting = {_task_id(raw) for queue in queues for raw in store.lrange(queue, 0, -1)}
    held = set()
    for raw in store.hvals(UNACKED):
        # kombu keeps [message, exchange, routing key] per delivery tag.
        try:
            message, _exchange, _routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        held.add(_task_id(message))
    return {task_id for task_id in waiting | held if task_id is not None}


class LostTaskSweep:
    """Publishes again the tasks recorded but nowhere in Redis's hands: a task found so on two sweeps in a row.

    `queues`: every Celery queue a task may wait in (a task waiting in one the sweep does not look at would be
    taken for lost). `publish` gets the task's id, name, args, kwargs and queue (None: the default one).
    """

    def __init__(
        self,
        store: Redis,
        publish: Callable[[str, str, Any, Any, str | None], None],
        *,
        queues: Collection[str],
        lost_after_s: float,
    ) -> None:
        self._store = store
        self._publish = publish
        self._queues = queues
        self._lost_after_s = lost_after_s
        self._suspects: set[str] = set()

    def sweep(self, *, now: float) -> int:
        """How many tasks were published again."""
        old = [
            task_id.decode() if isinstance(task_id, bytes) else str(task_id)
            for task_id in self._store.zrangebyscore(
                PUBLISHED_AT, "-inf", now - self._lost_after_s, start=0, num=SWEEP_LIMIT
            )
        ]
        if not old:
            self._suspects = set()
            return 0
        missing = set(old) - _in_hand(self._store, self._queues)
        lost, self._suspects = missing & self._suspects, missing - self._suspects
        for task_id in sorted(lost):
            entry = self._store.hget(TASKS, task_id)
            if entry is None:  # finished since
                self._store.zrem(PUBLISHED_AT, task_id)
                continue
            task = json.loads(entry)
            log.warning("task %s (%s) is nowhere in Redis: publishing it again", task_id, task["task"])
            # An entry of a version without lanes names no queue: it was published to the default one.
            self._publish(task_id, task["task"], task["args"], task["kwargs"], task.get("queue"))
        return len(lost)

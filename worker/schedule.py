"""`tripmail scheduler`: hands the runs whose wait is over, the messages and webhook deliveries due to be tried again,
to the workers, every TRIPMAIL_SCHEDULER_INTERVAL_S; and publishes again the tasks Redis lost
(tripmail/queue/ledger.py).

Due times live in the database, not in delayed Celery tasks, so a wait survives restarts of everything. A run is
handed out (published, then marked) and handed out again if no worker carried it on within
queue.HAND_OUT_AGAIN_AFTER; handing a run out twice is harmless, as only one transaction moves it out of waiting.
More than one scheduler may run: they only hand the same runs out twice.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kombu.exceptions import OperationalError as BrokerError
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tripmail import queue
from tripmail.automations import runs
from tripmail.config import get_settings
from tripmail.delivery import retries
from tripmail.ids import utcnow
from tripmail.logs import configure
from tripmail.queue.ledger import LostTaskSweep
from tripmail.webhooks import deliveries
from worker.app import celery, sessions

log = logging.getLogger("tripmail.scheduler")

# Runs (and webhook deliveries) looked at per tick; when a tick finds this many, the next one starts at once.
DUE_PER_TICK = 1000


def hand_out(
    sessions: sessionmaker[Session],
    publish: Callable[[str, list[int], str], None],
    *,
    now: datetime,
    batch_size: int,
) -> int:
    """Publish the due runs, messages and webhook deliveries, a task per batch and lane to that lane's queue, then
    mark them handed out; the most of one kind."""
    with sessions() as session:
        due_runs = runs.due_runs(session, now=now, limit=DUE_PER_TICK)
        due_messages = retries.due_messages(session, now=now, limit=DUE_PER_TICK)
        due_webhooks = deliveries.due_webhooks(session, now=now, limit=DUE_PER_TICK)
    for task, due in (
        (queue.CARRY_ON_RUNS, due_runs),
        (queue.DELIVER_MESSAGES, due_messages),
        (queue.FIRE_WEBHOOKS, due_webhooks),
    ):
        for transactional, ids in due.lanes():
            for start in range(0, len(ids), batch_size):
                publish(task, ids[start : start + batch_size], queue.queue_for(transactional=transactional))
    # Marked after publishing: a scheduler that dies between the two hands them out again, never loses one.
    with sessions.begin() as session:
        runs.mark_handed_out(session, due_runs.ids, now=now)
        retries.mark_handed_out(session, due_messages.ids, now=now)
        deliveries.mark_handed_out(session, due_webhooks.ids, now=now)
    return max(len(due_runs.ids), len(due_messages.ids), len(due_webhooks.ids))


def main() -> None:
    settings = get_settings()
    configure("INFO", log_format=settings.log_format)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    def publish(task: str, ids: list[int], queue_name: str) -> None:
        celery.send_task(task, args=[ids], queue=queue_name)

    def publish_again(task_id: str, task: str, args: Any, kwargs: Any, queue_name: str | None) -> None:
        celery.send_task(task, args=args, kwargs=kwargs, task_id=task_id, queue=queue_name)

    lost_tasks = LostTaskSweep(
        Redis.from_url(settings.redis_url),
        publish_again,
        queues=list(queue.QUEUES.values()),
        lost_after_s=settings.task_lost_after_s,
    )
    swept_at = 0.0
    log.info(
        "scheduler started: looking for due runs, messages and webhooks every %.1f s", settings.scheduler_interval_s
    )
    while not stopping.is_set():
        handed_out = 0
        try:
            handed_out = hand_out(sessions(), publish, now=utcnow(), batch_size=settings.send_batch_size)
        except (OperationalError, BrokerError) as exc:
            # The database or Redis is away for a moment: what is due stays due and is handed out next time.
            log.warning("could not hand out what is due, trying again: %s", exc)
        # Apart: it needs Redis only, so a database outage does not stop it.
        if time.monotonic() - swept_at >= settings.task_lost_after_s / 4:
            try:
                lost_tasks.sweep(now=time.time())
                swept_at = time.monotonic()
            except (RedisError, BrokerError) as exc:
                log.warning("could not look for lost tasks, trying again: %s", exc)
        if handed_out:
            log.info("handed out %d due run(s), message(s) or webhook(s)", handed_out)
        if handed_out < DUE_PER_TICK:
            stopping.wait(settings.scheduler_interval_s)
    log.info("scheduler stopped")


if __name__ == "__main__":
    main()

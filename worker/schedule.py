"""`tripmail scheduler`: hands the runs whose wait is over to the workers, every TRIPMAIL_SCHEDULER_INTERVAL_S.

Due times live in the database, not in delayed Celery tasks, so a wait survives restarts of everything. A run is
handed out (published, then marked) and handed out again if no worker carried it on within
runs.HAND_OUT_AGAIN_AFTER; handing a run out twice is harmless, as only one transaction moves it out of waiting.
More than one scheduler may run: they only hand the same runs out twice.
"""

import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime

from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tripmail import queue, runs
from tripmail.config import get_settings
from tripmail.ids import utcnow
from worker.app import celery, sessions

log = logging.getLogger("tripmail.scheduler")

# Runs looked at per tick; when a tick finds this many, the next one starts at once.
DUE_PER_TICK = 1000


def hand_out_due_runs(
    sessions: sessionmaker[Session], publish: Callable[[list[int]], None], *, now: datetime, batch_size: int
) -> int:
    """Publish the due runs, a task per batch, then mark them handed out; how many there were."""
    with sessions() as session:
        due = runs.due_runs(session, now=now, limit=DUE_PER_TICK)
    for start in range(0, len(due), batch_size):
        publish(due[start : start + batch_size])
    # Marked after publishing: a scheduler that dies between the two hands them out again, never loses one.
    with sessions.begin() as session:
        runs.mark_handed_out(session, due, now=now)
    return len(due)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    def publish(run_ids: list[int]) -> None:
        celery.send_task(queue.CARRY_ON_RUNS, args=[run_ids])

    log.info("scheduler started: looking for due runs every %.1f s", settings.scheduler_interval_s)
    while not stopping.is_set():
        handed_out = 0
        try:
            handed_out = hand_out_due_runs(sessions(), publish, now=utcnow(), batch_size=settings.send_batch_size)
        except (OperationalError, BrokerError) as exc:
            # The database or Redis is away for a moment: the runs stay due and are handed out next time.
            log.warning("could not hand out due runs, trying again: %s", exc)
        if handed_out:
            log.info("handed out %d due run(s)", handed_out)
        if handed_out < DUE_PER_TICK:
            stopping.wait(settings.scheduler_interval_s)
    log.info("scheduler stopped")


if __name__ == "__main__":
    main()

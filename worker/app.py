"""The worker's Celery app; the one object built at import, because `celery -A` needs it there."""

import logging
import os
from functools import lru_cache
from typing import Any

import httpx
from celery import Task, states
from celery.signals import setup_logging, task_postrun, worker_init, worker_process_shutdown
from prometheus_client import start_http_server
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import get_settings
from tripmail.db import make_sessionmaker
from tripmail.delivery.claims import give_up_run
from tripmail.delivery.smtp import SendingLoop, make_sending_loop
from tripmail.ids import utcnow
from tripmail.logs import configure
from tripmail.metrics import MULTIPROCESS_DIR, counted, forget_process
from tripmail.queue import ledger, make_celery
from tripmail.webhooks import egress

log = logging.getLogger(__name__)

celery = make_celery(get_settings())
celery.conf.include = ["worker.tasks"]


@lru_cache
def sessions() -> sessionmaker[Session]:
    """Built on first use, which is inside the forked pool process, so no connection crosses a fork."""
    return make_sessionmaker(get_settings())


@lru_cache
def sending() -> SendingLoop:
    """Built on first use, like sessions(); its SMTP connections serve every task the process runs."""
    return make_sending_loop(get_settings())


@lru_cache
def webhook_client() -> httpx.Client:
    """Built on first use, like sessions(); keeps connections to webhook receivers from one task to the next."""
    return egress.webhook_client(get_settings().webhook_allowed_networks)


@lru_cache
def ledger_store() -> Redis:
    """Built on first use, like sessions()."""
    return Redis.from_url(get_settings().redis_url)


# How many times a task's process may die under it (killed for its memory, say) before the task is given up on.
LOST_RUNS_ALLOWED = 2
# How long a task's count of runs is kept: past any redelivery (visibility timeout, lost-task sweep) of it.
RUNS_KEPT_S = 24 * 3600


def _runs_key(task_id: str) -> str:
    return f"tripmail:runs:{task_id}"


def lost_runs(task_id: str) -> int:
    """Count a run of the task starting; how many runs of it started before and never finished: their process died
    under them. Redis keeps no delivery count, and task_reject_on_worker_lost requeues a task each time."""
    key = _runs_key(task_id)
    try:
        pipe = ledger_store().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, RUNS_KEPT_S)
        started, _ = pipe.execute()
    except RedisError:
        log.warning("could not count the runs of task %s", task_id)
        return 0
    return int(started) - 1


class LostTooOften(Exception):
    """The task's process died under it LOST_RUNS_ALLOWED times: it is not run again."""


class GivesUpWhenLost(Task):  # type: ignore[misc]
    """A task that fails, with a reason, rather than run a third time after its process died under it twice.

    A task that kills its process (a batch too large for its memory) is put back in the queue by
    task_reject_on_worker_lost and kills the next process too, forever. What it would have sent is failed
    instead (give_up), so the reason shows on its messages.
    """

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        lost = lost_runs(task_id)
        if lost >= LOST_RUNS_ALLOWED:
            reason = f"the worker was lost {lost} times while sending this (out of memory?); it is not tried again"
            log.error("task %s (%s): %s", task_id, self.name, reason)
            with sessions().begin() as session:
                self.give_up(session, reason, *args)
            raise LostTooOften(reason)

    def give_up(self, session: Session, reason: str, *args: Any) -> None:
        """Fail what the task would have sent; here, the messages its runs claimed."""
        give_up_run(session, run_id=self.request.id, reason=reason, now=utcnow())


def _forget_task(task_id: str | None = None, state: str | None = None, **_: object) -> None:
    """After each run of a task: forget its count of runs and, once it finished, its ledger entry; one round trip."""
    if task_id is None:
        return
    try:
        pipe = ledger_store().pipeline(transaction=False)
        # Finished, retrying or failed: this run did not die under the task. A retry starts the count again.
        pipe.delete(_runs_key(task_id))
        # A task that will retry was published again under the same id, which keeps its entry.
        if state in (states.SUCCESS, states.FAILURE):
            ledger.forget_in(pipe, task_id)
        pipe.execute()
    except RedisError:
        # Kept, the entry makes the scheduler publish the finished task again: a harmless second run.
        log.warning("could not forget the runs of task %s, nor whether it finished", task_id)


def _serve_metrics(**_: object) -> None:
    """In the worker's main process: its pool processes' metrics, summed, on TRIPMAIL_WORKER_METRICS_PORT."""
    port = get_settings().worker_metrics_port
    if port is not None and MULTIPROCESS_DIR in os.environ:
        start_http_server(port, registry=counted())


def _forget_process(pid: int | None = None, **_: object) -> None:
    if pid is not None:
        forget_process(pid)


def _configure_logging(loglevel: int | str | None = None, **_: object) -> None:
    # Connected, this replaces Celery's own logging set-up: its lines and ours share TRIPMAIL_LOG_FORMAT.
    configure(loglevel or "INFO", log_format=get_settings().log_format)


setup_logging.connect(_configure_logging)
worker_init.connect(_serve_metrics)
worker_process_shutdown.connect(_forget_process)
task_postrun.connect(_forget_task)

"""The worker's Celery app; the one object built at import, because `celery -A` needs it there."""

import logging
import os
from functools import lru_cache

import httpx
from celery import states
from celery.signals import setup_logging, task_postrun, worker_init, worker_process_shutdown
from prometheus_client import start_http_server
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from tripmail import egress, ledger
from tripmail.config import get_settings
from tripmail.db import make_sessionmaker
from tripmail.logs import configure
from tripmail.metrics import MULTIPROCESS_DIR, counted, forget_process
from tripmail.queue import make_celery
from tripmail.smtp import SendingLoop, make_sending_loop

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


def _forget_finished(task_id: str | None = None, state: str | None = None, **_: object) -> None:
    # A task that will retry was published again under the same id, which keeps its entry.
    if task_id is None or state not in (states.SUCCESS, states.FAILURE):
        return
    try:
        ledger.forget(ledger_store(), task_id)
    except RedisError:
        # Kept, the entry makes the scheduler publish the finished task again: a harmless second run.
        log.warning("could not forget finished task %s", task_id)


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
task_postrun.connect(_forget_finished)

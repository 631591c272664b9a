"""The worker's Celery app; the one object built at import, because `celery -A` needs it there."""

import os
from functools import lru_cache

import httpx
from celery.signals import setup_logging, worker_init, worker_process_shutdown
from prometheus_client import start_http_server
from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import get_settings
from tripmail.db import make_sessionmaker
from tripmail.logs import configure
from tripmail.metrics import MULTIPROCESS_DIR, counted, forget_process
from tripmail.queue import make_celery
from tripmail.smtp import SendingLoop, parse_smtp_url

celery = make_celery(get_settings())
celery.conf.include = ["worker.tasks"]


@lru_cache
def sessions() -> sessionmaker[Session]:
    """Built on first use, which is inside the forked pool process, so no connection crosses a fork."""
    return make_sessionmaker(get_settings())


@lru_cache
def sending() -> SendingLoop:
    """Built on first use, like sessions(); its SMTP connections serve every task the process runs."""
    settings = get_settings()
    target = parse_smtp_url(settings.smtp_url.get_secret_value())
    return SendingLoop(target, size=settings.smtp_connections, timeout=settings.smtp_timeout_s)


@lru_cache
def webhook_client() -> httpx.Client:
    """Built on first use, like sessions(); keeps connections to webhook receivers from one task to the next."""
    return httpx.Client(follow_redirects=False)


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

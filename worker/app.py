"""The worker's Celery app; the one object built at import, because `celery -A` needs it there."""

from functools import lru_cache

import httpx
from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import get_settings
from tripmail.db import make_sessionmaker
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

"""Prometheus metrics: what the api counts as it answers, and what a scrape reads of the queue and the database.

Counters live in the process that counts (prometheus-client's default registry); the state of the queue and of
the messages is read at scrape time, so every api process answers the same for it however many there are.
"""

from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tripmail.models import Message

# Celery's default queue: a Redis list of the tasks no worker has taken yet.
CELERY_QUEUE = "celery"

EVENTS = Counter(
    "tripmail_events",
    "Events the api answered, by the dialect they came in (native or a compat one) and the outcome "
    "(accepted, duplicate, or the refusal's problem code).",
    ["dialect", "outcome"],
)


class StateCollector(Collector):
    """Queue depth and messages by status, read when scraped; a source that does not answer is left out."""

    def __init__(self, redis: Redis, sessions: sessionmaker[Session]) -> None:
        self._redis = redis
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            depth = self._redis.llen(CELERY_QUEUE)
        except RedisError:
            depth = None
        if depth is not None:
            yield GaugeMetricFamily("tripmail_queue_depth", "Tasks waiting in the Celery queue.", value=depth)
        try:
            with self._sessions() as session:
                counts = session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        except SQLAlchemyError:
            return
        messages = GaugeMetricFamily("tripmail_messages", "Messages by status, all workspaces.", labels=["status"])
        for status, count in counts:
            messages.add_metric([status], count)
        yield messages

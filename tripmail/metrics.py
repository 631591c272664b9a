"""Prometheus metrics: what the api counts as it answers, and what a scrape reads of the queue and the database.

Counters live in the process that counts: in prometheus-client's default registry, or, where several processes
count (worker pool processes, `tripmail api --workers N`), in files that a scrape sums. The state of the queue and
of the messages is read at scrape time, so every api process answers the same for it however many there are.
"""

import json
import os
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.models import Message
from tripmail.queue import PUBLISHED_AT, QUEUES

# prometheus-client's multiprocess mode: where it is set when a process makes its metrics, they count into files
# in this directory.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def counted() -> CollectorRegistry:
    """This process's counters or, where several processes count into MULTIPROCESS_DIR, the sum of theirs."""
    if MULTIPROCESS_DIR not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus-client
    return registry


def forget_process(pid: int) -> None:
    """A process that counted into files has exited: its gauges are dropped, its counters still count."""
    if MULTIPROCESS_DIR in os.environ:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # untyped in prometheus-client


EVENTS = Counter(
    "tripmail_events",
    "Events the api answered, by the dialect they came in (native or a compat one) and the outcome "
    "(accepted, duplicate, or the refusal's problem code).",
    ["dialect", "outcome"],
)


def _waited(message: bytes | str | None) -> float:
    if message is None:
        return 0.0
    try:
        published_at = json.loads(message)["headers"][PUBLISHED_AT]
    except (ValueError, KeyError, TypeError):
        return 0.0  # a task published by something else than Tripmail's code: its age is not known
    return max(0.0, time.time() - float(published_at))


class DeliveryMetrics(NamedTuple):
    delivered: Counter
    retries: Counter
    smtp_seconds: Histogram
    failovers: Counter


@lru_cache
def delivery_metrics() -> DeliveryMetrics:
    """What the workers count (each pool process, summed by the worker's metrics server), made on first use: the api
    imports the delivery code but never sends, and would otherwise show these at zero."""
    return DeliveryMetrics(
        Counter(
            "tripmail_deliveries",
            "Messages a worker tried to send, by outcome (sent, transient, permanent, unknown).",
            ["outcome"],
        ),
        Counter("tripmail_retries", "Messages given back to be sent again after a transient failure."),
        Histogram(
            "tripmail_smtp_send_seconds",
            "From MAIL FROM to the reply to DATA, per message, on a connection already open.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        ),
        Counter(
            "tripmail_relay_failovers",
            "Messages a relay could not take (unreachable, or a 4xx before DATA), offered to the next relay.",
            ["relay"],
        ),
    )


class StateCollector(Collector):
    """Queue depth and messages by status, read when scraped; a source that does not answer is left out."""

    def __init__(self, redis: Redis, sessions: sessionmaker[Session]) -> None:
        self._redis = redis
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "tripmail_queue_depth", "Tasks waiting in each lane's Celery queue (a Redis list).", labels=["queue"]
        )
        oldest_age = GaugeMetricFamily(
            "tripmail_queue_oldest_age_seconds",
            "How long the task that has waited longest in each lane's Celery queue has waited (0 when it is empty).",
            labels=["queue"],
        )
        try:
            pipe = self._redis.pipeline(transaction=False)
            for queue in QUEUES.values():
                pipe.llen(queue)
                # Kombu pushes on the left and workers take from the right: the rightmost task has waited longest.
                pipe.lindex(queue, -1)
            replies = pipe.execute()
        except RedisError:
            return
        for lane, length, oldest in zip(QUEUES, replies[::2], replies[1::2], strict=True):
            depth.add_metric([lane], length)
            oldest_age.add_metric([lane], _waited(oldest))
        yield depth
        yield oldest_age
        try:
            with self._sessions() as session:
                counts = session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        except SQLAlchemyError:
            return
        messages = GaugeMetricFamily("tripmail_messages", "Messages by status, all workspaces.", labels=["status"])
        for status, count in counts:
            messages.add_metric([status], count)
        yield messages


class _Counted(Collector):
    """counted(), read afresh at each scrape: in multiprocess mode it sums the files as they are then."""

    def collect(self) -> Iterator[Metric]:
        yield from counted().collect()


def serve_api_metrics(settings: Settings, port: int) -> None:
    """What the api's GET /metrics shows, served on `port` (TRIPMAIL_METRICS_PORT) by a thread of this process.

    `tripmail api` calls it before it starts uvicorn, in the process that is the api itself with one worker and,
    with several, the supervisor of processes that count into files: served once, not raced for by each process.
    """
    registry = CollectorRegistry()
    registry.register(_Counted())
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.api_redis_timeout_s,
        socket_connect_timeout=settings.api_redis_timeout_s,
        decode_responses=True,
    )
    registry.register(StateCollector(redis, make_sessionmaker(settings)))
    start_http_server(port, registry=registry)

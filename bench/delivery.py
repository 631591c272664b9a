"""Delivery: what Tripmail's real stack does against the floor for each step, measured in ONE run.

1. Ingest: `POST /v1/events` req/s (wrk -t1 -c64, a key per request) against a baseline route of the same api
   process that only LPUSHes the raw body to Redis (served when TRIPMAIL_BENCH_BASELINE is set).
2. End-to-end: N events through `POST /v1/events/batch` (1,000 a request) to an SMTP sink, through `tripmail api`
   + `tripmail worker --concurrency 2`, from the first POST to the Nth message accepted by the sink; against a raw
   aiosmtplib loop in its own process sending N messages rendered the same way before its clock, over
   smtp_connections x worker concurrency connections: as stdlib EmailMessage objects that `send_message` flattens
   (PERFORMANCE.md's physical limit, the goal's reference) and, for scale, as bytes flattened before the clock.
3. The naive reference: one Celery task per email that builds it and sends it over a new smtplib connection,
   prefork x 2 on the same Redis (bench/naive_app.py).
4. Latency from the 202 of `POST /v1/events` to SMTP-accepted at the sink, at a steady rate.

CPU seconds per process tree are sampled over each timed window (psutil); the tree that used the most names the
bottleneck. Each process is started here, on free ports, and stopped again, also on error.
Run: `python -m bench.delivery [--emails 2000]` (see --help); `make bench` runs it with the defaults.
"""

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import sqlite3
import subprocess
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
from redis import Redis

from api.ops import BENCH_BASELINE_QUEUE
from bench.http_posts import HttpError, Poster
from bench.naive_app import SEND_EMAIL, publisher
from bench.processes import (
    PYTHON,
    CpuMeter,
    ProcessGroup,
    Started,
    Tree,
    bench_env,
    read_line,
    wait_for_log,
    wait_for_port,
    write_line,
)
from bench.quickstart import APPLY_FILE, FIRST_NAME, REPOSITORY, batch_bodies, event_body, recipient, reset_link
from tests.support.ports import free_port
from tests.support.stack import run_tripmail, start_api
from tests.support.stack import start_worker as launch_worker
from tripmail.config import Settings
from tripmail.queue import QUEUES

RESULTS = REPOSITORY / "bench" / "results.md"
WRK_SCRIPT = REPOSITORY / "bench" / "wrk_events.lua"
WORKER_CONCURRENCY = 2
CORES = len(os.sched_getaffinity(0))
E2E_DOMAIN = "e2e.example.com"
RAW_DOMAIN = "raw.example.com"
RAW_BYTES_DOMAIN = "raw-bytes.example.com"
NAIVE_DOMAIN = "naive.example.com"

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    emails: int
    batch: int
    latency_events: int
    latency_rate: float
    light_latency_rate: float
    wrk_seconds: int
    wrk_warmup_seconds: int
    wrk_connections: int
    timeout: float
    stall: float
    results: Path | None


# --- the SMTP sink -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkCount:
    messages: int
    distinct: int
    last_at: float


class SinkClient:
    """Talks to bench/sink.py over its stdin/stdout line protocol."""

    def __init__(self, started: Started) -> None:
        self.started = started
        self._lock = threading.Lock()

    def _ask(self, command: str) -> str:
        with self._lock:
            write_line(self.started.process.stdin, command)
            reply = read_line(self.started.process.stdout)
        if not reply or reply.startswith("error"):
            raise RuntimeError(f"sink answered {reply!r} to {command!r}:\n{self.started.log_tail()}")
        return reply

    def count(self, domain: str) -> SinkCount:
        messages, distinct, last_at = self._ask(f"count {domain}").split()
        return SinkCount(int(messages), int(distinct), float(last_at))

    def stamps(self, domain: str) -> dict[str, float]:
        stamps: dict[str, float] = json.loads(self._ask(f"stamps {domain}"))
        return stamps


# --- the stack ---------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    work: Path
    group: ProcessGroup
    redis: Started
    redis_url: str
    sink: SinkClient
    smtp_port: int
    settings: Settings
    api: Started
    api_url: str
    token: str
    worker: Started | None = None

    def store(self) -> Redis:
        return Redis.from_url(self.redis_url, socket_timeout=10)

    def flush_redis(self) -> None:
        with contextlib.closing(self.store()) as store:
            store.flushall()

    def settle_then_flush(self, *, quiet_for: float = 1.5, timeout: float = 60) -> None:
        """Let requests still in the api when the load stopped finish enqueueing, then empty Redis, so none of
        them reaches the next measurement's worker."""
        with contextlib.closing(self.store()) as store:
            deadline = time.monotonic() + timeout
            last, quiet_since = -1, time.monotonic()
            while time.monotonic() < deadline:
                size = sum(int(store.llen(queue)) for queue in [*QUEUES.values(), BENCH_BASELINE_QUEUE])
                if size != last:
                    last, quiet_since = size, time.monotonic()
                elif time.monotonic() - quiet_since >= quiet_for:
                    break
                time.sleep(0.1)
            store.flushall()

    def queue_length(self, db: int = 0) -> int:
        """Tasks waiting, in every lane."""
        with contextlib.closing(Redis.from_url(self.redis_url.rsplit("/", 1)[0] + f"/{db}")) as store:
            return sum(int(store.llen(queue)) for queue in QUEUES.values())

    def trees(self, **extra: Started | None) -> dict[str, Tree]:
        """Every process the bench runs now, so what the machine did outside them shows as `other`."""
        trees = {"api": Tree(self.api.pid)} if self.api.alive() else {}
        if self.worker is not None and self.worker.alive():
            trees["worker"] = Tree(self.worker.pid)
        trees |= {name: Tree(started.pid) for name, started in extra.items() if started is not None}
        trees |= {"sink": Tree(self.sink.started.pid), "redis": Tree(self.redis.pid)}
        return trees | {"driver": Tree(os.getpid(), recursive=False)}


def tripmail_cli(settings: Settings, *args: str) -> str:
    done = run_tripmail(settings, *args, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"tripmail {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def start_stack(group: ProcessGroup, work: Path) -> Stack:
    redis_port = free_port()
    redis = group.start(
        "redis",
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    )
    wait_for_port(redis, redis_port, timeout=15)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"

    smtp_port = free_port()
    sink_process = group.start(
        "sink", [PYTHON, "-m", "bench.sink", "--port", str(smtp_port)], env=bench_env(), pipes=True
    )
    if read_line(sink_process.process.stdout) != "READY":
        raise RuntimeError(f"the sink did not start:\n{sink_process.log_tail()}")
    sink = SinkClient(sink_process)

    settings = Settings(
        database_url=f"sqlite:///{work / 'tripmail.db'}",
        redis_url=redis_url,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        mail_dir=work / "mail",
        # One token sends 20,000 events in seconds and wrk some 3,000 requests/s: the bench measures the path, not
        # the per-token limit.
        rate_limit_per_minute=0,
    )
    tripmail_cli(settings, "migrate")
    tripmail_cli(settings, "apply", str(APPLY_FILE))
    token = tripmail_cli(settings, "token", "create", "--workspace", "quickstart", "--scopes", "events:write")
    token = token.strip().splitlines()[-1]

    process, api_url = start_api(settings.model_copy(update={"bench_baseline": True}), work)
    api = group.adopt("api", process, work / "api.log")
    return Stack(work, group, redis, redis_url, sink, smtp_port, settings, api, api_url, token)


def start_worker(stack: Stack) -> Started:
    """The stack's worker on both lanes."""
    stack.worker = adopt_worker(stack, "worker")
    return stack.worker


def adopt_worker(
    stack: Stack, name: str, *, queues: str | None = None, concurrency: int = WORKER_CONCURRENCY
) -> Started:
    """`tripmail worker` (on both lanes unless `queues` names them), stopped with the rest of the stack."""
    process = launch_worker(
        stack.settings, stack.work, name, queues=queues, concurrency=concurrency, hostname=f"{name}@bench", timeout=90
    )
    return stack.group.adopt(name, process, stack.work / f"{name}.log")


def stop_worker(stack: Stack) -> None:
    if stack.worker is not None:
        stack.group.stop(stack.worker)
        stack.worker = None


# --- results -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuWindow:
    seconds: float
    used: dict[str, float]
    system: dict[str, float]
    machine_busy: float

    @property
    def other(self) -> float:
        """Busy CPU of the machine that none of the bench's processes used (someone else's tests, the kernel)."""
        return max(0.0, self.machine_busy - sum(self.used.values()))


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@contextlib.contextmanager
def metered(trees: dict[str, Tree], into: list[CpuWindow]) -> Iterator[None]:
    meter = CpuMeter(trees)
    busy = _busy_seconds()
    meter.start()
    try:
        yield
    finally:
        used, system = meter.stop()
        into.append(CpuWindow(meter.stopped_at - meter.started_at, used, system, _busy_seconds() - busy))


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class IngestRun:
    label: str
    wrk: WrkResult
    cpu: CpuWindow


@dataclass
class DeliveryRun:
    label: str
    target: int
    delivered: int
    distinct: int
    seconds: float
    completed: bool
    cpu: CpuWindow
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class LatencyRun:
    events: int
    rate: float
    accepted: int
    matched: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    http_p50_ms: float
    http_p99_ms: float
    sent_p50_ms: float
    sent_p99_ms: float
    offered_rate: float
    failures: dict[str, int]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


# --- 1. ingest ---------------------------------------------------------------------------------------------------


def start_wrk(stack: Stack, path: str, seconds: int, connections: int, run_id: str) -> Started:
    return stack.group.start(
        f"wrk-{run_id}",
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            f"{stack.api_url}{path}",
            "--",
            stack.token,
            run_id,
        ],
    )


def finish_wrk(stack: Stack, wrk: Started, seconds: int) -> WrkResult:
    wrk.process.wait(timeout=seconds + 120)
    stack.group.stop(wrk)
    found = re.search(r"^WRK_RESULT (.+)$", wrk.log_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no result:\n{wrk.log_tail()}")
    requests, duration_us, non_2xx, connect, read, write, timeouts, p50_us, p99_us = map(int, found[1].split())
    return WrkResult(
        requests, duration_us / 1e6, non_2xx, connect + read + write + timeouts, p50_us / 1000, p99_us / 1000
    )


def measure_ingest_one(stack: Stack, label: str, path: str, options: Options) -> IngestRun:
    stamp = datetime.now(UTC).strftime("%H%M%S")
    print(
        f"  {label}: POST {path}, warm-up {options.wrk_warmup_seconds} s, then wrk -t1 -c{options.wrk_connections} "
        f"-d{options.wrk_seconds}s",
        flush=True,
    )
    if options.wrk_warmup_seconds > 0:
        warm_up = start_wrk(stack, path, options.wrk_warmup_seconds, options.wrk_connections, f"warm-{label}-{stamp}")
        finish_wrk(stack, warm_up, options.wrk_warmup_seconds)
    stack.settle_then_flush()
    windows: list[CpuWindow] = []
    wrk = start_wrk(stack, path, options.wrk_seconds, options.wrk_connections, f"{label}-{stamp}")
    with metered(stack.trees(wrk=wrk), windows):
        result = finish_wrk(stack, wrk, options.wrk_seconds)
    queued = stack.queue_length() if label == "tripmail" else 0
    stack.settle_then_flush()
    print(
        f"  {label}: {result.rate:,.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
        f"{result.non_2xx} non-2xx, {result.socket_errors} socket errors"
        + (f", {queued:,} tasks queued" if queued else ""),
        flush=True,
    )
    return IngestRun(label, result, windows[0])


def measure_ingest(stack: Stack, options: Options) -> tuple[IngestRun, IngestRun]:
    print("\n[1] ingest: POST /v1/events against the LPUSH-only baseline, same api process", flush=True)
    baseline = measure_ingest_one(stack, "baseline", "/bench/baseline/events", options)
    tripmail = measure_ingest_one(stack, "tripmail", "/v1/events", options)
    print(f"  ratio tripmail / baseline: {tripmail.wrk.rate / baseline.wrk.rate:.2f}x (goal >= 0.8x)", flush=True)
    return baseline, tripmail


# --- waiting for the sink ----------------------------------------------------------------------------------------


@dataclass
class Feeder:
    """What the thread that feeds the stack (HTTP posts, task publishes) has done so far."""

    total: int
    fed: int = 0
    errors: list[str] = field(default_factory=list)
    done: bool = False
    finished_at: float = 0.0

    def run(self, feed: Callable[["Feeder"], None]) -> threading.Thread:
        def target() -> None:
            try:
                feed(self)
            except Exception as exc:  # reported with the run, not raised in a thread nobody joins
                self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                self.finished_at = time.monotonic()
                self.done = True

        thread = threading.Thread(target=target, name="feeder", daemon=True)
        thread.start()
        return thread


def wait_for_sink(
    stack: Stack,
    label: str,
    domain: str,
    target: int,
    *,
    started: float,
    options: Options,
    feeder: Feeder | None = None,
    queue_db: int = 0,
) -> tuple[SinkCount, bool]:
    """Until the sink has `target` messages for `domain`; gives up after the timeout, or when nothing moved (sink,
    queue, feeder) for `options.stall` seconds. Prints progress every 5 s."""
    last_state: tuple[int, int, int] = (-1, -1, -1)
    moved_at = time.monotonic()
    next_print = started + 5
    previous_count, previous_at = 0, started
    while True:
        count = stack.sink.count(domain)
        now = time.monotonic()
        if count.messages >= target:
            return count, True
        queued = stack.queue_length(queue_db)
        state = (count.messages, queued, feeder.fed if feeder else 0)
        if state != last_state:
            last_state, moved_at = state, now
        if now - moved_at > options.stall:
            print(f"  {label}: nothing moved for {options.stall:.0f} s; giving up", flush=True)
            return count, False
        if now - started > options.timeout:
            print(f"  {label}: timed out after {options.timeout:.0f} s", flush=True)
            return count, False
        if now >= next_print:
            recent = (count.messages - previous_count) / (now - previous_at)
            fed = f"fed {feeder.fed:,}/{feeder.total:,}, " if feeder else ""
            print(
                f"  {label}: {now - started:5.0f} s  {fed}queue {queued:,}, sink {count.messages:,}/{target:,} "
                f"({recent:,.0f}/s over the last {now - previous_at:.0f} s)",
                flush=True,
            )
            previous_count, previous_at, next_print = count.messages, now, now + 5
        time.sleep(0.1)


def delivery_run(
    label: str, target: int, count: SinkCount, completed: bool, started: float, cpu: CpuWindow
) -> DeliveryRun:
    end = count.last_at if count.messages else time.monotonic()
    run = DeliveryRun(label, target, count.messages, count.distinct, end - started, completed, cpu)
    if count.messages != count.distinct:
        run.notes.append(f"{count.messages - count.distinct} duplicate message(s) at the sink")
    print(
        f"  {label}: {count.messages:,} delivered ({count.distinct:,} distinct recipients) in {run.seconds:.1f} s = "
        f"{run.rate:,.0f} emails/s{'' if completed else ' (INCOMPLETE)'}",
        flush=True,
    )
    return run


# --- 2. Tripmail end to end --------------------------------------------------------------------------------------


def post_batches(stack: Stack, bodies: list[bytes], events_per_body: list[int]) -> Callable[[Feeder], None]:
    def feed(feeder: Feeder) -> None:
        headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=600) as client:
            for body, events in zip(bodies, events_per_body, strict=True):
                answer = client.post("/v1/events/batch", content=body)
                if answer.status_code != 202:
                    feeder.errors.append(f"HTTP {answer.status_code}: {answer.text[:300]}")
                else:
                    result = answer.json()
                    if result["rejected"]:
                        rejected = [item for item in result["results"] if item["status"] != "queued"]
                        feeder.errors.append(f"{result['rejected']} rejected, first: {rejected[0]}")
                feeder.fed += events

    return feed


def database_summary(stack: Stack) -> str:
    with contextlib.closing(sqlite3.connect(stack.work / "tripmail.db", timeout=30)) as database:
        messages = database.execute("SELECT status, count(*) FROM messages GROUP BY status ORDER BY 2 DESC").fetchall()
        events = database.execute("SELECT status, count(*) FROM events GROUP BY status ORDER BY 2 DESC").fetchall()
    return (
        "messages "
        + ", ".join(f"{status} {count:,}" for status, count in messages)
        + "; events "
        + ", ".join(f"{status} {count:,}" for status, count in events)
    )


def worker_log_findings(worker: Started) -> list[str]:
    """Errors, warnings and retries the worker logged, counted, with the first few lines of each kind."""
    lines = worker.log_text().splitlines()
    findings = []
    for kind, pattern in (
        ("ERROR", re.compile(r"\bERROR\b|Traceback")),
        ("WARNING", re.compile(r"\bWARNING\b")),
        ("retry", re.compile(r"\bRetry in\b|\bretrying\b", re.IGNORECASE)),
        (
            "batch with failures or retries",
            re.compile(r"delivered batch: \d+ sent, (?:[1-9]\d* failed|\d+ failed, [1-9])"),
        ),
    ):
        hits = [line for line in lines if pattern.search(line)]
        if hits:
            findings.append(f"{len(hits):,} {kind} line(s) in the worker log, e.g.: " + " | ".join(hits[:3]))
    return findings


def measure_tripmail_e2e(stack: Stack, options: Options) -> DeliveryRun:
    print(
        f"\n[2] end to end, Tripmail: {options.emails:,} events via POST /v1/events/batch "
        f"({options.batch:,} a request) -> tripmail worker --concurrency {WORKER_CONCURRENCY} -> SMTP sink",
        flush=True,
    )
    bodies = batch_bodies(options.emails, options.batch, E2E_DOMAIN, key_prefix="e2e")
    sizes = [min(options.batch, options.emails - start) for start in range(0, options.emails, options.batch)]
    worker = stack.worker or start_worker(stack)
    feeder = Feeder(total=options.emails)
    windows: list[CpuWindow] = []
    with metered(stack.trees(), windows):
        started = time.monotonic()
        feeder.run(post_batches(stack, bodies, sizes))
        count, completed = wait_for_sink(
            stack, "tripmail", E2E_DOMAIN, options.emails, started=started, options=options, feeder=feeder
        )
    run = delivery_run("tripmail", options.emails, count, completed, started, windows[0])
    run.notes.append(f"all {options.emails:,} events posted in {feeder.finished_at - started:.1f} s")
    run.notes += [f"posting: {error}" for error in feeder.errors[:3]]
    with contextlib.suppress(sqlite3.Error):
        run.notes.append(f"database after the run: {database_summary(stack)}")
    run.notes += worker_log_findings(worker)
    if not completed:
        run.notes.append(f"worker log tail:\n{worker.log_tail(30)}")
    for note in run.notes:
        print(f"  note: {note}", flush=True)
    return run


# --- 4. latency --------------------------------------------------------------------------------------------------


@dataclass
class PacedPosts:
    accepted_at: dict[str, float] = field(default_factory=dict)
    # When each request was sent: a driver short of CPU reads its 202s late, which shrinks (even below zero) the
    # time from 202 to the sink; from the send, the time is an upper bound instead.
    sent_at: dict[str, float] = field(default_factory=dict)
    round_trips: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    offered_rate: float = 0.0


async def paced_posts(stack: Stack, count: int, rate: float, domain: str) -> PacedPosts:
    """POST one event every 1/rate s, whatever the answers take; the monotonic time of each 202 by recipient."""
    posts = PacedPosts()
    bodies = [json.dumps(event_body(index, domain, key_prefix=domain)).encode() for index in range(count)]
    poster = Poster(stack.api_url, {"Authorization": f"Bearer {stack.token}"})

    async def post(index: int) -> None:
        sent = time.monotonic()
        try:
            status = await asyncio.wait_for(poster.post("/v1/events", bodies[index]), timeout=60)
        except (HttpError, TimeoutError) as exc:
            posts.failures[type(exc).__name__] += 1
            return
        now = time.monotonic()
        if status != 202:
            posts.failures[f"HTTP {status}"] += 1
            return
        posts.accepted_at[recipient(index, domain)] = now
        posts.sent_at[recipient(index, domain)] = sent
        posts.round_trips.append(now - sent)

    tasks = []
    start = time.monotonic()
    try:
        for index in range(count):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(index)))
            if index and index % int(rate * 5) == 0:
                print(f"  latency: {index:,}/{count:,} posted", flush=True)
        posts.offered_rate = count / (time.monotonic() - start)
        await asyncio.gather(*tasks)
    finally:
        poster.close()
    return posts


def measure_latency(
    stack: Stack, options: Options, events: int, rate: float, *, domain: str | None = None
) -> LatencyRun:
    """`domain`: the recipients' (and the events' keys), one of its own per measurement of a stack."""
    print(
        f"\n[4] latency: {events:,} events at {rate:g}/s via POST /v1/events, 202 -> SMTP-accepted at the sink",
        flush=True,
    )
    if stack.worker is None:
        start_worker(stack)
    domain = domain or f"latency-{rate:g}.example.com"
    posts = asyncio.run(paced_posts(stack, events, rate, domain))
    accepted_at, round_trips = posts.accepted_at, posts.round_trips
    if posts.failures:
        print(f"  latency: posts that got no 202: {dict(posts.failures)}", flush=True)
    started = time.monotonic()
    wait_for_sink(stack, "latency", domain, len(accepted_at), started=started, options=options)
    stamps = stack.sink.stamps(domain)
    latencies = [(stamps[address] - accepted) * 1000 for address, accepted in accepted_at.items() if address in stamps]
    from_send = [(stamps[address] - sent) * 1000 for address, sent in posts.sent_at.items() if address in stamps]
    result = LatencyRun(
        events=events,
        rate=rate,
        accepted=len(accepted_at),
        matched=len(latencies),
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=float("nan")),
        http_p50_ms=percentile([trip * 1000 for trip in round_trips], 0.5),
        sent_p50_ms=percentile(from_send, 0.5),
        sent_p99_ms=percentile(from_send, 0.99),
        http_p99_ms=percentile([trip * 1000 for trip in round_trips], 0.99),
        offered_rate=posts.offered_rate,
        failures=dict(posts.failures),
    )
    print(
        f"  latency: {result.matched:,}/{result.accepted:,} matched; accept -> SMTP-accepted "
        f"p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms, max {result.max_ms:.0f} ms "
        f"(from the send p50 {result.sent_p50_ms:.0f} ms, p99 {result.sent_p99_ms:.0f} ms; "
        f"HTTP round trip p50 {result.http_p50_ms:.1f} ms, p99 {result.http_p99_ms:.1f} ms; "
        f"offered {result.offered_rate:.0f}/s)",
        flush=True,
    )
    return result


# --- 2. the raw aiosmtplib loop, the physical limit ---------------------------------------------------------------


@dataclass(frozen=True)
class RawLoop:
    prebuilt: str
    domain: str
    label: str
    what: str


RAW_MESSAGES = RawLoop(
    "message", RAW_DOMAIN, "raw aiosmtplib loop", "stdlib EmailMessage objects, flattened by send_message in the loop"
)
RAW_BYTES = RawLoop("bytes", RAW_BYTES_DOMAIN, "raw loop, bytes", "bytes flattened by build_email before the clock")


def measure_raw(stack: Stack, options: Options, connections: int, loop: RawLoop) -> DeliveryRun:
    print(
        f"\n[2] end to end, the raw aiosmtplib loop: {options.emails:,} messages rendered before the clock as "
        f"{loop.what}, {connections} connections, own process",
        flush=True,
    )
    sender = stack.group.start(
        f"raw-client-{loop.prebuilt}",
        [
            PYTHON,
            "-m",
            "bench.raw_sender",
            "--port",
            str(stack.smtp_port),
            "--count",
            str(options.emails),
            "--connections",
            str(connections),
            "--domain",
            loop.domain,
            "--prebuilt",
            loop.prebuilt,
        ],
        env=bench_env(),
        pipes=True,
    )
    try:
        ready = read_line(sender.process.stdout)
        if not ready.startswith("READY"):
            raise RuntimeError(f"the raw client did not get ready:\n{sender.log_tail()}")
        print(f"  raw: {ready.removeprefix('READY ')}", flush=True)
        windows: list[CpuWindow] = []
        with metered(stack.trees(raw_client=sender), windows):
            started = time.monotonic()
            write_line(sender.process.stdin, "go")
            count, completed = wait_for_sink(
                stack, loop.label, loop.domain, options.emails, started=started, options=options
            )
        run = delivery_run(loop.label, options.emails, count, completed, started, windows[0])
        done = read_line(sender.process.stdout)
        run.notes.append(f"client: {done}")
    finally:
        stack.group.stop(sender)
    return run


# --- 3. the naive Celery app -------------------------------------------------------------------------------------


def measure_naive(stack: Stack, options: Options) -> DeliveryRun:
    print(
        f"\n[3] the naive path: {options.emails:,} Celery tasks, one per email, new smtplib connection each, "
        f"prefork x {WORKER_CONCURRENCY}, same Redis (db 1)",
        flush=True,
    )
    broker_url = stack.redis_url.rsplit("/", 1)[0] + "/1"
    worker = stack.group.start(
        "naive-worker",
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "bench.naive_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--loglevel",
            "info",
        ],
        env=bench_env(BENCH_NAIVE_BROKER_URL=broker_url, BENCH_NAIVE_SMTP_PORT=str(stack.smtp_port)),
        cwd=stack.work,
    )
    try:
        wait_for_log(worker, " ready.", timeout=90)
        producer = publisher(broker_url)

        def feed(feeder: Feeder) -> None:
            for index in range(options.emails):
                producer.send_task(SEND_EMAIL, args=[recipient(index, NAIVE_DOMAIN), FIRST_NAME, reset_link(index)])
                feeder.fed += 1

        feeder = Feeder(total=options.emails)
        windows: list[CpuWindow] = []
        with metered(stack.trees(naive_worker=worker), windows):
            started = time.monotonic()
            feeder.run(feed)
            count, completed = wait_for_sink(
                stack,
                "naive",
                NAIVE_DOMAIN,
                options.emails,
                started=started,
                options=options,
                feeder=feeder,
                queue_db=1,
            )
        run = delivery_run("naive Celery + smtplib", options.emails, count, completed, started, windows[0])
        run.notes.append(f"all {options.emails:,} tasks published in {feeder.finished_at - started:.1f} s")
        run.notes += [f"publishing: {error}" for error in feeder.errors[:3]]
    finally:
        stack.group.stop(worker)
    return run


# --- the report --------------------------------------------------------------------------------------------------


def _version(program: list[str]) -> str:
    try:
        done = subprocess.run(program, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    output = (done.stdout + done.stderr).strip().splitlines()
    return output[0] if output else "?"


def machine_line() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        model = found[1] if found else model
    packages = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("aiosmtpd", "aiosmtplib", "celery", "kombu", "redis", "fastapi", "uvicorn", "SQLAlchemy")
    )
    redis_version = re.search(r"v=(\S+)", _version(["redis-server", "--version"]))
    wrk_version = _version(["wrk", "--version"]).split(" [")[0]
    return (
        f"{CORES} cores (nproc; {model}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, redis-server {redis_version[1] if redis_version else '?'}, "
        f"{wrk_version}; {packages}"
    )


def source_line() -> str:
    commit = _version(["git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(REPOSITORY), "status", "--porcelain", "--untracked-files=no"])
    return f"commit {commit}" + (" plus uncommitted changes in the working tree" if dirty not in ("", "?") else "")


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference > 0 else "n/a"


def _rate(run: DeliveryRun) -> str:
    text = f"{run.rate:,.0f} emails/s ({run.delivered:,} in {run.seconds:.1f} s)"
    return text if run.completed else f"{text}, INCOMPLETE: {run.delivered:,}/{run.target:,}"


def summary_table(
    ingest: tuple[IngestRun, IngestRun] | None,
    tripmail: DeliveryRun | None,
    raw: DeliveryRun | None,
    raw_bytes: DeliveryRun | None,
    naive: DeliveryRun | None,
    latencies: list[LatencyRun],
    options: Options,
    connections: int,
) -> list[str]:
    rows = ["| measure | Tripmail | reference | ratio | goal |", "|---|---|---|---|---|"]
    if ingest is not None:
        baseline, ours = ingest
        rows.append(
            f"| ingest `POST /v1/events`, wrk -t1 -c{options.wrk_connections} -d{options.wrk_seconds}s, a key per "
            f"request | {ours.wrk.rate:,.0f} req/s, p50 {ours.wrk.p50_ms:.1f} ms, p99 {ours.wrk.p99_ms:.1f} ms "
            f"| LPUSH-only route, same process: {baseline.wrk.rate:,.0f} req/s, p50 {baseline.wrk.p50_ms:.1f} ms, "
            f"p99 {baseline.wrk.p99_ms:.1f} ms | {_ratio(ours.wrk.rate, baseline.wrk.rate)} | >= 0.8x |"
        )
    if tripmail is not None and raw is not None:
        rows.append(
            f"| end to end: {options.emails:,} events via `/v1/events/batch` -> SMTP sink, api + worker x"
            f"{WORKER_CONCURRENCY} | {_rate(tripmail)} | raw aiosmtplib loop, {RAW_MESSAGES.what}, {connections} "
            f"connections: {_rate(raw)} | {_ratio(tripmail.rate, raw.rate)} | >= 0.6x |"
        )
    if tripmail is not None and raw_bytes is not None:
        rows.append(
            f"| end to end vs the loop with nothing to flatten | {_rate(tripmail)} | raw aiosmtplib loop, "
            f"{RAW_BYTES.what}, {connections} connections: {_rate(raw_bytes)} | "
            f"{_ratio(tripmail.rate, raw_bytes.rate)} | (for scale) |"
        )
    if tripmail is not None and naive is not None:
        rows.append(
            f"| end to end vs the way most apps send | {_rate(tripmail)} | a Celery task + new smtplib connection "
            f"per email, prefork x{WORKER_CONCURRENCY}: {_rate(naive)} | {_ratio(tripmail.rate, naive.rate)} "
            "| >= 5x (about 3x is the physical limit here) |"
        )
    if raw is not None and naive is not None:
        rows.append(
            f"| (the physical limit vs naive, for scale) | | raw loop / naive | {_ratio(raw.rate, naive.rate)} | |"
        )
    for latency in latencies:
        goal = "p99 <= 150 ms" if latency.rate >= options.latency_rate else "(a rate the stack sustains, for scale)"
        rows.append(
            f"| latency, 202 of `POST /v1/events` -> SMTP-accepted, {latency.events:,} events at "
            f"{latency.rate:.0f}/s | p50 {latency.p50_ms:.0f} ms, p99 {latency.p99_ms:.0f} ms, max "
            f"{latency.max_ms:.0f} ms ({latency.matched:,}/{latency.accepted:,} accepted events matched at the sink"
            + "".join(f", {count} {kind}" for kind, count in latency.failures.items())
            + f"; from the request's send: p50 {latency.sent_p50_ms:.0f} ms, p99 {latency.sent_p99_ms:.0f} ms; HTTP "
            f"round trip p50 {latency.http_p50_ms:.0f} ms, p99 {latency.http_p99_ms:.0f} ms, offered "
            f"{latency.offered_rate:.0f}/s) | | | {goal} |"
        )
    return rows


TREE_ORDER = ("api", "worker", "naive_worker", "raw_client", "wrk", "sink", "redis", "driver")


def cpu_table(windows: list[tuple[str, int, str, CpuWindow]]) -> list[str]:
    """CPU seconds per tree, with ms per unit (email or request) in brackets."""
    header = "| run | window s | " + " | ".join(name.replace("_", " ") for name in TREE_ORDER)
    rows = [header + " | outside the bench | bench busy, of the cores |", "|---" * (len(TREE_ORDER) + 4) + "|"]
    for label, units, unit, window in windows:
        cells = []
        for name in TREE_ORDER:
            if name not in window.used:
                cells.append("")
                continue
            seconds = window.used[name]
            cells.append(f"{seconds:.1f} ({1000 * seconds / units:.2f})" if units else f"{seconds:.1f}")
        busy = sum(window.used.values()) / (window.seconds * CORES)
        rows.append(
            f"| {label} ({units:,} {unit}) | {window.seconds:.1f} | "
            + " | ".join(cells)
            + f" | {window.other:.1f} | {100 * busy:.0f} % |"
        )
    return rows


def bottleneck(label: str, units: int, unit: str, window: CpuWindow) -> str:
    cores_used = {name: seconds / window.seconds for name, seconds in window.used.items()}
    ordered = sorted(cores_used.items(), key=lambda item: item[1], reverse=True)
    top, top_cores = ordered[0]
    ours = sum(window.used.values()) / (window.seconds * CORES)
    machine = window.machine_busy / (window.seconds * CORES)
    outside = window.other / (window.seconds * CORES)
    listing = ", ".join(
        f"{name.replace('_', ' ')} {cores:.2f} ({1000 * window.used[name] / max(1, units):.2f} ms/{unit}, "
        f"{100 * window.system[name] / window.used[name]:.0f} % in the kernel)"
        for name, cores in ordered[:4]
        if cores >= 0.01
    )
    text = f"**{label}**: cores in use: {listing}. "
    if machine >= 0.85:
        text += (
            f"The {CORES} cores were saturated ({100 * machine:.0f} % busy, {100 * outside:.0f} % of them by work "
            f"outside the bench), so the figure is CPU-bound; within the bench, {top.replace('_', ' ')} is the "
            "bottleneck."
        )
    elif top_cores >= 0.85:
        text += (
            f"{top.replace('_', ' ')} was busy computing ({top_cores:.2f} cores, the most of any tree; the bench used "
            f"{100 * ours:.0f} % of the machine): it set the pace."
        )
    else:
        text += (
            f"No tree was CPU-bound (the machine {100 * machine:.0f} % busy): the time went to waiting (round trips, "
            "polling, queueing), not to computing."
        )
    return text


def report(
    options: Options,
    connections: int,
    ingest: tuple[IngestRun, IngestRun] | None,
    tripmail: DeliveryRun | None,
    raw: DeliveryRun | None,
    raw_bytes: DeliveryRun | None,
    naive: DeliveryRun | None,
    latencies: list[LatencyRun],
    failures: list[str],
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    lines = [
        f"## Delivery (`make bench`, bench/delivery.py) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine_line()}. Source: {source_line()}. Load average before / after: "
        f"{' '.join(f'{v:.1f}' for v in load[0])} / {' '.join(f'{v:.1f}' for v in load[1])} (other work shares "
        "these cores: figures are noisy, the ratios taken in this one run are what count).",
        "",
        "Set-up: redis-server, the counting aiosmtpd sink (own process, uvloop), `tripmail api` (1 process) and "
        f"`tripmail worker --concurrency {WORKER_CONCURRENCY}` as subprocesses on free ports, SQLite in a temp dir, "
        "`examples/quickstart.yaml` applied. Each email is the quickstart's password reset (text + HTML) to a "
        f"recipient of its own. The raw loop uses smtp_connections x worker concurrency = {connections} connections.",
        "",
        *summary_table(ingest, tripmail, raw, raw_bytes, naive, latencies, options, connections),
        "",
        "CPU seconds per process tree over each timed window (psutil, sampled every 0.25 s), with ms per email or "
        "request in brackets; `driver` is the bench process posting or publishing; `outside the bench` is busy CPU "
        "of the machine that no process of the bench used.",
        "",
    ]
    windows: list[tuple[str, int, str, CpuWindow]] = []
    if ingest is not None:
        windows += [(f"ingest {run.label}", run.wrk.requests, "requests", run.cpu) for run in ingest]
    runs = [run for run in (tripmail, raw, raw_bytes, naive) if run is not None]
    windows += [(run.label, run.delivered, "emails", run.cpu) for run in runs]
    lines += [*cpu_table(windows), "", "What the CPU figures say:", ""]
    lines += [f"- {bottleneck(label, units, unit.rstrip('s'), window)}" for label, units, unit, window in windows]
    notes = [f"- {run.label}: {note}" for run in runs for note in run.notes if "\n" not in note]
    notes += [f"- FAILED: {failure}" for failure in failures]
    if notes:
        lines += ["", "Observed during the run:", "", *notes]
    return "\n".join(lines) + "\n"


START_MARK = "<!-- bench.delivery: start (generated; replaced by each run) -->"
END_MARK = "<!-- bench.delivery: end -->"


def record(
    path: Path,
    section: str,
    *,
    marks: tuple[str, str] = (START_MARK, END_MARK),
    title: str = "# Recorded benchmark runs",
) -> None:
    """Put the section between the marks in the results file, keeping everything before and after them."""
    start_mark, end_mark = marks
    existing = path.read_text(encoding="utf-8") if path.exists() else f"{title}\n"
    block = f"{start_mark}\n{section.rstrip()}\n{end_mark}"
    if start_mark in existing and end_mark in existing:
        head, rest = existing.split(start_mark, 1)
        tail = rest.split(end_mark, 1)[1]
        path.write_text(f"{head}{block}{tail}", encoding="utf-8")
    else:
        path.write_text(f"{existing.rstrip()}\n\n{block}\n", encoding="utf-8")


# --- main --------------------------------------------------------------------------------------------------------


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=20_000, help="events / emails per delivery run")
    parser.add_argument("--batch", type=int, default=1_000, help="events per POST /v1/events/batch")
    parser.add_argument("--latency-events", type=int, default=2_000)
    parser.add_argument("--latency-rate", type=float, default=100.0, help="events per second")
    parser.add_argument(
        "--light-latency-rate",
        type=float,
        default=10.0,
        help="then the same for 20 s at this lower rate, to tell queueing from per-message time (0: skip)",
    )
    parser.add_argument("--wrk-seconds", type=int, default=15)
    parser.add_argument("--wrk-warmup-seconds", type=int, default=3)
    parser.add_argument("--wrk-connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one delivery run may take")
    parser.add_argument("--stall", type=float, default=120.0, help="give up after this long with nothing moving")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file whose delivery section is set")
    parser.add_argument("--no-record", action="store_true", help="print only; leave the results file alone")
    args = parser.parse_args()
    return Options(
        emails=args.emails,
        batch=args.batch,
        latency_events=args.latency_events,
        latency_rate=args.latency_rate,
        light_latency_rate=args.light_latency_rate,
        wrk_seconds=args.wrk_seconds,
        wrk_warmup_seconds=args.wrk_warmup_seconds,
        wrk_connections=args.wrk_connections,
        timeout=args.timeout,
        stall=args.stall,
        results=None if args.no_record else args.results,
    )


def attempt(failures: list[str], what: str, measure: Callable[[], T]) -> T | None:
    try:
        return measure()
    except Exception as exc:
        traceback.print_exc()
        failures.append(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return None


def main() -> None:
    options = parse_options()
    connections = Settings().smtp_connections * WORKER_CONCURRENCY
    load_before = os.getloadavg()
    failures: list[str] = []
    ingest = tripmail = raw = raw_bytes = naive = None
    latencies: list[LatencyRun] = []
    print(f"delivery bench: {options.emails:,} emails per run, {CORES} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="tripmail-bench-") as folder, ProcessGroup(Path(folder)) as group:
        work = Path(folder)
        stack = start_stack(group, work)
        print(f"stack: api {stack.api_url}, redis {stack.redis_url}, sink port {stack.smtp_port}, logs in {work}")
        ingest = attempt(failures, "ingest", lambda: measure_ingest(stack, options))
        tripmail = attempt(failures, "tripmail end to end", lambda: measure_tripmail_e2e(stack, options))
        if tripmail is not None and not tripmail.completed:
            # A backlog would be counted in the latency: start it from an empty queue and a fresh worker.
            stop_worker(stack)
            stack.flush_redis()
        steady = attempt(
            failures, "latency", lambda: measure_latency(stack, options, options.latency_events, options.latency_rate)
        )
        light_events = round(options.light_latency_rate * 20)
        light = (
            attempt(
                failures,
                "latency at the light rate",
                lambda: measure_latency(stack, options, light_events, options.light_latency_rate),
            )
            if light_events
            else None
        )
        latencies = [run for run in (steady, light) if run is not None]
        # The raw loop and the naive app get the cores to themselves (and the sink).
        stop_worker(stack)
        group.stop(stack.api)
        stack.flush_redis()
        raw = attempt(failures, "raw loop", lambda: measure_raw(stack, options, connections, RAW_MESSAGES))
        raw_bytes = attempt(failures, "raw loop, bytes", lambda: measure_raw(stack, options, connections, RAW_BYTES))
        naive = attempt(failures, "naive", lambda: measure_naive(stack, options))
    section = report(
        options,
        connections,
        ingest,
        tripmail,
        raw,
        raw_bytes,
        naive,
        latencies,
        failures,
        (load_before, os.getloadavg()),
    )
    print("\n" + section)
    if options.results is not None:
        record(options.results, section)
        print(f"recorded in {options.results}")


if __name__ == "__main__":
    main()

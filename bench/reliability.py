"""`make reliability`: the fault scenarios of issues 5 and 8 at scale, each on a fresh stack, into bench/reliability.md.

Each scenario starts its own redis-server (AOF on), fault-injecting SMTP sink (bench.fault_sink), SQLite database,
`tripmail api`, a scheduler and WORKERS x `tripmail worker`, posts the load through `POST /v1/events/batch` (a key
per event; a refused or failed batch is posted again as it was, so the dedupe keys make the repeat harmless),
injects its faults while the mail goes out, waits until every message is final in the database, then compares
what the sink accepted with what the database says. Run `python -m bench.reliability --help` for the options.
"""

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import psutil
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from bench.delivery import machine_line, record, source_line, tripmail_cli
from bench.fault_sink import refused
from bench.processes import PYTHON, ProcessGroup, Started, bench_env, read_line, wait_for_port, write_line
from bench.quickstart import APPLY_FILE, REPOSITORY, batch_bodies, recipient
from tests.support.ports import free_port
from tests.support.stack import start_api, start_scheduler, start_worker
from tripmail.config import Settings
from tripmail.models import Event, Message, MessageAttempt

REPORT = REPOSITORY / "bench" / "reliability.md"
DOMAIN = "reliability.example.com"
# Short enough that a killed worker's tasks come back within the run (kombu sweeps the unacked set every tenth of
# it), long enough above the task time limit that Redis never hands a running task to a second worker.
VISIBILITY_TIMEOUT_S = 30
TASK_TIME_LIMIT_S = 20
# A task Redis lost (tripmail/queue/ledger.py) is published again within the run, well inside the stall limit.
TASK_LOST_AFTER_S = 20
SEND_RETRY_SCHEDULE = "1s,2s,4s,8s,16s"
FINAL = ("sent", "failed", "unknown", "suppressed")


@dataclass(frozen=True)
class Faults:
    kill_workers: bool = False
    redis_restarts: int = 0
    transient: float = 0.0
    refuse: float = 0.0
    # The SMTP server stopped (connections cut, new ones refused) from the middle of the posting, for
    # Options.relay_down_s.
    relay_down: bool = False

    def describe(self, options: "Options") -> str:
        parts = []
        if self.kill_workers:
            parts.append(
                f"kill -9 of a worker {options.kill_min_s:g}-{options.kill_max_s:g} s after the last replacement "
                "was ready"
            )
        if self.redis_restarts:
            parts.append(f"redis-server restarted {self.redis_restarts}x")
        if self.transient or self.refuse:
            parts.append(f"SMTP {self.transient:.0%} 421 / {self.refuse:.0%} 550")
        if self.relay_down:
            parts.append(f"the SMTP server down for {options.relay_down_s:g} s mid-run")
        return ", ".join(parts) or "none"

    def describe_plain(self) -> str:
        parts = []
        if self.kill_workers:
            parts.append("worker kill -9")
        if self.redis_restarts:
            parts.append(f"{self.redis_restarts} Redis restarts")
        if self.transient or self.refuse:
            parts.append(f"SMTP {self.transient:.0%} 421 / {self.refuse:.0%} 550")
        if self.relay_down:
            parts.append("relay down")
        return ", ".join(parts) or "no faults"


SCENARIOS: dict[str, Faults] = {
    "baseline": Faults(),
    "worker-kills": Faults(kill_workers=True),
    "redis-restarts": Faults(redis_restarts=2),
    "smtp-faults": Faults(transient=0.10, refuse=0.02),
    "combined": Faults(kill_workers=True, redis_restarts=2, transient=0.10, refuse=0.02),
    "relay-down": Faults(relay_down=True),
}


@dataclass(frozen=True)
class Options:
    emails: int
    scenarios: list[str]
    workers: int
    concurrency: int
    batch: int
    rate: float
    kill_min_s: float
    kill_max_s: float
    redis_down_s: float
    relay_down_s: float
    stall_s: float
    appendfsync: str
    output: Path
    workdir: Path | None


@dataclass
class Injected:
    kills: int = 0
    # Worker main processes that exited on their own (each replaced, as a supervisor would), with their last error.
    died: list[str] = field(default_factory=list)
    redis_restarts: int = 0
    # Seconds from each Redis restart until the sink accepted mail again.
    resumed_after_s: list[float | None] = field(default_factory=list)
    post_failures: int = 0
    posts_repeated: int = 0
    duplicates_answered: int = 0
    answered_421: int = 0
    answered_550: int = 0
    # Set while the SMTP server is down: the drain does not take the stillness for a stall.
    relay_down: threading.Event = field(default_factory=threading.Event)
    relay_down_s: float = 0.0
    # Seconds from the SMTP server's return until it had accepted every message.
    drained_after_relay_s: float | None = None


@dataclass
class Outcome:
    name: str
    faults: Faults
    emails: int
    injected: Injected
    drained: bool
    drain_s: float | None
    wall_s: float
    expected: int
    refused_550: int
    delivered: int
    duplicated_by_recipient: int
    duplicated_by_message_id: int
    lost: int
    lost_statuses: Counter[str]
    unknown: int
    unknown_at_sink: int
    failed_550: int
    failed_other: int
    refused_delivered: int
    statuses: Counter[str]
    events: int
    attempts: int
    sent_not_at_sink: int
    at_sink_not_sent: Counter[str]
    log_findings: dict[str, int]


class FaultSink:
    def __init__(self, started: Started) -> None:
        self.started = started
        self._lock = threading.Lock()

    def ask(self, command: str) -> dict[str, Any]:
        with self._lock:
            write_line(self.started.process.stdin, command)
            reply: dict[str, Any] = json.loads(read_line(self.started.process.stdout))
            return reply

    def accepted(self) -> int:
        return int(str(self.ask("stats")["accepted"]))


class Stack:
    """One scenario's processes; workers and redis-server are replaced as the faults need."""

    def __init__(self, group: ProcessGroup, work: Path, options: Options, faults: Faults) -> None:
        self.group = group
        self.work = work
        self.options = options
        self.redis_port = free_port()
        self.redis = self._start_redis()
        smtp_port = free_port()
        argv = [PYTHON, "-m", "bench.fault_sink", "--port", str(smtp_port)]
        argv += ["--transient", str(faults.transient), "--refuse", str(faults.refuse)]
        sink = group.start("sink", argv, env=bench_env(), pipes=True)
        if read_line(sink.process.stdout) != "READY":
            raise RuntimeError(f"the sink did not start:\n{sink.log_tail()}")
        self.sink = FaultSink(sink)
        self.database_url = f"sqlite:///{work / 'tripmail.db'}"
        self.settings = Settings(
            database_url=self.database_url,
            redis_url=f"redis://127.0.0.1:{self.redis_port}/0",
            smtp_url=f"smtp://127.0.0.1:{smtp_port}",
            mail_dir=work / "mail",
            rate_limit_per_minute=0,
            visibility_timeout_s=VISIBILITY_TIMEOUT_S,
            task_time_limit_s=TASK_TIME_LIMIT_S,
            task_lost_after_s=TASK_LOST_AFTER_S,
            # Seconds rather than the production minutes, so a 421 is tried again within the scenario.
            send_retry_schedule=SEND_RETRY_SCHEDULE,
        )
        tripmail_cli(self.settings, "migrate")
        tripmail_cli(self.settings, "apply", str(APPLY_FILE))
        token = tripmail_cli(self.settings, "token", "create", "--workspace", "quickstart", "--scopes", "events:write")
        self.token = token.strip().splitlines()[-1]
        api, self.api_url = start_api(self.settings, work)
        self.api = group.adopt("api", api, work / "api.log")
        self.scheduler = group.adopt("scheduler", start_scheduler(self.settings, work), work / "scheduler.log")
        self.workers: list[Started] = []
        # Held while a worker is killed or found dead, so a kill is never taken for a worker that died on its own.
        self.lock = threading.Lock()
        self._worker_numbers = iter(range(1, 10_000))
        for _ in range(options.workers):
            self.start_worker()
        self.engine: Engine = create_engine(self.database_url)

    def _start_redis(self) -> Started:
        # appendonly: the queue survives a restart. A restart by SIGTERM writes and fsyncs the AOF before exiting,
        # so the fsync policy only matters for a crash of redis-server itself (not injected here).
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.work)]
        argv += ["--save", "", "--appendonly", "yes", "--appendfsync", self.options.appendfsync]
        argv += ["--maxmemory-policy", "noeviction"]
        redis = self.group.start("redis", argv)
        wait_for_port(redis, self.redis_port, timeout=30)
        return redis

    def restart_redis(self, down_s: float) -> None:
        self.group.stop(self.redis)  # SIGTERM: redis-server flushes the AOF and exits
        time.sleep(down_s)
        self.redis = self._start_redis()

    def start_worker(self) -> Started:
        number = next(self._worker_numbers)
        name = f"worker-{number}"
        process = start_worker(
            self.settings,
            self.work,
            name,
            concurrency=self.options.concurrency,
            hostname=f"w{number}@reliability",
            timeout=120,
        )
        worker = self.group.adopt(name, process, self.work / f"{name}.log")
        self.workers.append(worker)
        return worker

    def kill_worker(self, worker: Started) -> None:
        """SIGKILL to the worker's main process and its pool at once: no warm shutdown, no acks."""
        with self.lock:
            try:
                processes = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
            except psutil.Error:
                processes = []
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signal.SIGKILL)
            worker.process.wait(timeout=30)
            self.workers.remove(worker)
        self.group.stop(worker)

    def dead_workers(self) -> list[Started]:
        """Workers that exited without being killed here; taken off the list."""
        with self.lock:
            dead = [worker for worker in self.workers if not worker.alive()]
            for worker in dead:
                self.workers.remove(worker)
        for worker in dead:
            self.group.stop(worker)  # its pool processes, if the main process left them behind
        return dead

    def statuses(self) -> tuple[Counter[str], int]:
        """Messages by status, and events recorded."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(Message.status, func.count()).group_by(Message.status)).all()
            events = connection.execute(select(func.count()).select_from(Event)).scalar_one()
        return Counter({str(status): int(count) for status, count in rows}), int(events)

    def logs(self) -> list[Path]:
        return sorted(self.work.glob("*.log"))


def post_load(
    stack: Stack, options: Options, injected: Injected, started: threading.Event, done: threading.Event
) -> None:
    """Every batch at the paced rate; a batch refused (Redis away) or cut off is posted again until accepted."""
    bodies = batch_bodies(options.emails, options.batch, DOMAIN, key_prefix="reliability")
    headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}
    interval = options.batch / options.rate
    with httpx.Client(timeout=60) as client:
        began = time.monotonic()
        started.set()
        for number, body in enumerate(bodies):
            delay = began + number * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            tries = 0
            while True:
                tries += 1
                try:
                    response = client.post(f"{stack.api_url}/v1/events/batch", content=body, headers=headers)
                    answer = response.json() if response.status_code == 202 else None
                except (httpx.HTTPError, ValueError):
                    answer = None
                if answer is not None and answer["rejected"] == 0:
                    injected.duplicates_answered += sum(1 for item in answer["results"] if item.get("duplicate"))
                    break
                injected.post_failures += 1
                time.sleep(0.5)
            injected.posts_repeated += tries - 1
    done.set()


def kill_workers(stack: Stack, options: Options, injected: Injected, stop: threading.Event) -> None:
    chooser = random.Random(7)  # noqa: S311 - a reproducible choice, not security
    while not stop.wait(chooser.uniform(options.kill_min_s, options.kill_max_s)):
        with stack.lock:
            if not stack.workers:
                continue
            victim = chooser.choice(stack.workers)
        print(f"    kill -9 {victim.name} (pid {victim.pid})", flush=True)
        stack.kill_worker(victim)
        injected.kills += 1
        try:
            stack.start_worker()
        except RuntimeError as exc:  # the replacement died starting: the drain loop reports and replaces it
            print(f"    the replacement did not start: {exc}", flush=True)


def restart_redis(stack: Stack, options: Options, injected: Injected, restarts: int, stop: threading.Event) -> None:
    """Restarts spread over the posting window (so the api meets them too), each once deliveries are under way."""
    posting_s = options.emails / options.rate
    began = time.monotonic()
    for number in range(restarts):
        at = began + posting_s * (number + 1) / (restarts + 1)
        if stop.wait(max(0.0, at - time.monotonic())):
            return
        before = stack.sink.accepted()
        print(f"    redis-server SIGTERM, {options.redis_down_s:g} s down, restarted on port {stack.redis_port}")
        restarted_at = time.monotonic()
        stack.restart_redis(options.redis_down_s)
        injected.redis_restarts += 1
        resumed: float | None = None
        while not stop.is_set() and time.monotonic() - restarted_at < options.stall_s:
            if stack.sink.accepted() > before:
                resumed = time.monotonic() - restarted_at
                break
            time.sleep(0.2)
        injected.resumed_after_s.append(resumed)


def take_relay_down(stack: Stack, options: Options, injected: Injected, faults: Faults, stop: threading.Event) -> None:
    """From the middle of the posting: the SMTP server away for `options.relay_down_s`."""
    down_s = options.relay_down_s
    to_accept = sum(
        1 for index in range(options.emails) if not (faults.refuse and refused(recipient(index, DOMAIN), faults.refuse))
    )
    if stop.wait(options.emails / options.rate / 2):
        return
    injected.relay_down.set()
    injected.relay_down_s = down_s
    print(f"    SMTP server down for {down_s:g} s", flush=True)
    stack.sink.ask("down")
    stop.wait(down_s)
    stack.sink.ask("up")
    back_at = time.monotonic()
    print("    SMTP server up again", flush=True)
    injected.relay_down.clear()
    while not stop.wait(1):
        if stack.sink.accepted() >= to_accept:
            injected.drained_after_relay_s = time.monotonic() - back_at
            return


def last_error(worker: Started) -> str:
    lines = worker.log_text().splitlines()
    critical = [line for line in lines if " CRITICAL " in line]
    errors = [line for line in lines if " ERROR " in line]
    if critical or errors:
        return (critical[0] if critical else errors[-1]).split(" ", 3)[-1][:300]
    return f"exit code {worker.process.returncode}"


def replace_dead_workers(stack: Stack, injected: Injected) -> None:
    for worker in stack.dead_workers():
        reason = last_error(worker)
        print(f"    {worker.name} exited on its own ({reason}); starting a replacement", flush=True)
        injected.died.append(f"{worker.name}: {reason}")
        try:
            stack.start_worker()
        except RuntimeError as exc:  # killed while starting (the kill thread picks any worker): the next look
            print(f"    the replacement did not start: {exc}", flush=True)


def wait_until_drained(stack: Stack, options: Options, posted: threading.Event, name: str, injected: Injected) -> bool:
    """Until every message is final (True), or nothing moved for `stall_s` (False)."""
    last: tuple[object, ...] = ()
    moved_at = time.monotonic()
    shown_at = 0.0
    began = time.monotonic()
    while True:
        replace_dead_workers(stack, injected)
        try:
            statuses, events = stack.statuses()
        except SQLAlchemyError as exc:  # SQLite busy under the workers' writes: look again
            print(f"    (database busy: {exc})", flush=True)
            time.sleep(1)
            continue
        accepted = stack.sink.accepted()
        now = time.monotonic()
        if now - shown_at >= 5:
            shown_at = now
            counts = " ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
            print(f"  [{name} {now - began:5.0f}s] events {events}, messages: {counts or '-'}; sink {accepted}")
        unfinished = statuses["pending"] + statuses["sending"]
        if posted.is_set() and statuses.total() >= options.emails and unfinished == 0:
            return True
        state = (tuple(sorted(statuses.items())), events, accepted)
        if state != last or injected.relay_down.is_set():
            last, moved_at = state, now
        elif now - moved_at > options.stall_s:
            print(f"  [{name}] nothing moved for {options.stall_s:g} s: stopping here", flush=True)
            return False
        time.sleep(1)


LOG_SIGNS = {
    "broker connection lost": "Connection to broker lost",
    "cannot connect to redis": "Cannot connect to redis",
    "worker lost (pool child died)": "WorkerLostError",
    "tracebacks": "Traceback (most recent call last)",
    "unknown outcome recorded": " unknown: ",
    "main process gave up (Unrecoverable error)": "Unrecoverable error",
    "retry not published, task rejected without requeue": "reject requeue=False",
    "tasks Redis lost, published again by the scheduler": "is nowhere in Redis: publishing it again",
}


def log_findings(stack: Stack) -> dict[str, int]:
    texts = [
        path.read_text(errors="replace") for path in stack.logs() if path.name.startswith(("worker-", "scheduler"))
    ]
    return {label: sum(text.count(sign) for text in texts) for label, sign in LOG_SIGNS.items()}


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def run_scenario(name: str, faults: Faults, options: Options, root: Path) -> Outcome:
    work = root / name
    work.mkdir()
    injected = Injected()
    print(f"== {name}: {options.emails:,} emails, faults: {faults.describe(options)}", flush=True)
    wall_began = time.monotonic()
    with ProcessGroup(work) as group:
        stack = Stack(group, work, options, faults)
        first_post = datetime.now(UTC)
        started, posted, stop = threading.Event(), threading.Event(), threading.Event()
        threads = [threading.Thread(target=post_load, args=(stack, options, injected, started, posted), daemon=True)]
        if faults.kill_workers:
            threads.append(threading.Thread(target=kill_workers, args=(stack, options, injected, stop), daemon=True))
        if faults.redis_restarts:
            args = (stack, options, injected, faults.redis_restarts, stop)
            threads.append(threading.Thread(target=restart_redis, args=args, daemon=True))
        if faults.relay_down:
            outage = (stack, options, injected, faults, stop)
            threads.append(threading.Thread(target=take_relay_down, args=outage, daemon=True))
        for thread in threads:
            thread.start()
        drained = wait_until_drained(stack, options, posted, name, injected)
        stop.set()
        for thread in threads[1:]:
            thread.join(timeout=180)
        time.sleep(1)
        outcome = analyse(name, faults, options, stack, injected, drained, first_post)
        outcome.wall_s = time.monotonic() - wall_began
        stack.engine.dispose()
        write_line(stack.sink.started.process.stdin, "quit")
    print(
        f"== {name}: expected {outcome.expected}, delivered {outcome.delivered}, duplicated "
        f"{outcome.duplicated_by_recipient}, lost {outcome.lost}, unknown {outcome.unknown}, drain "
        f"{outcome.drain_s if outcome.drain_s is not None else '-'} s",
        flush=True,
    )
    return outcome


def analyse(
    name: str,
    faults: Faults,
    options: Options,
    stack: Stack,
    injected: Injected,
    drained: bool,
    first_post: datetime,
) -> Outcome:
    stats = stack.sink.ask("stats")
    injected.answered_421 = int(str(stats["answered_421"]))
    injected.answered_550 = int(str(stats["answered_550"]))
    tally = stack.sink.ask("tally")
    received: Counter[str] = Counter(tally["recipients"])
    by_message_id: Counter[str] = Counter(tally["message_ids"])
    with stack.engine.connect() as connection:
        messages = connection.execute(select(Message.to_address, Message.status, Message.smtp_code)).all()
        last_final = connection.execute(
            select(func.max(Message.updated_at)).where(Message.status.in_(FINAL))
        ).scalar_one()
        attempts = connection.execute(select(func.count()).select_from(MessageAttempt)).scalar_one()
        events = connection.execute(select(func.count()).select_from(Event)).scalar_one()
    status_of: dict[str, str] = {}
    code_of: dict[str, int | None] = {}
    for address, status, code in messages:
        status_of[address.lower()] = str(status)
        code_of[address.lower()] = code
    addresses = [recipient(index, DOMAIN).lower() for index in range(options.emails)]
    refused_set = {address for address in addresses if faults.refuse and refused(address, faults.refuse)}
    expected = [address for address in addresses if address not in refused_set]
    delivered = [address for address in expected if received[address] > 0]
    lost_statuses: Counter[str] = Counter(
        status_of.get(address, "no message")
        for address in expected
        if received[address] == 0 and status_of.get(address) not in ("failed", "unknown")
    )
    statuses = Counter(status_of.values())
    unknown = [address for address, status in status_of.items() if status == "unknown"]
    failed = [address for address, status in status_of.items() if status == "failed"]
    failed_550 = sum(1 for address in failed if (code_of[address] or 0) // 10 == 55)
    return Outcome(
        name=name,
        faults=faults,
        emails=options.emails,
        injected=injected,
        drained=drained,
        drain_s=(_utc(last_final) - first_post).total_seconds() if drained and last_final is not None else None,
        wall_s=0.0,
        expected=len(expected),
        refused_550=len(refused_set),
        delivered=len(delivered),
        duplicated_by_recipient=sum(count - 1 for count in received.values() if count > 1),
        duplicated_by_message_id=sum(count - 1 for count in by_message_id.values() if count > 1),
        lost=lost_statuses.total(),
        lost_statuses=lost_statuses,
        unknown=len(unknown),
        unknown_at_sink=sum(1 for address in unknown if received[address] > 0),
        failed_550=failed_550,
        failed_other=len(failed) - failed_550,
        refused_delivered=sum(1 for address in refused_set if received[address] > 0),
        statuses=statuses,
        events=int(events),
        attempts=int(attempts),
        sent_not_at_sink=sum(1 for address, status in status_of.items() if status == "sent" and not received[address]),
        at_sink_not_sent=Counter(
            status_of.get(address, "no message") for address in received if status_of.get(address) != "sent"
        ),
        log_findings=log_findings(stack),
    )


# --- the report --------------------------------------------------------------------------------------------------


def _faults_cell(outcome: Outcome) -> str:
    injected = outcome.injected
    parts = []
    if outcome.faults.kill_workers:
        parts.append(f"{injected.kills} worker kills")
    if injected.died:
        parts.append(f"{len(injected.died)} worker(s) exited on their own, replaced")
    if outcome.faults.redis_restarts:
        parts.append(f"{injected.redis_restarts} Redis restarts")
    if outcome.faults.transient or outcome.faults.refuse:
        parts.append(f"{injected.answered_421:,} x 421, {injected.answered_550:,} x 550")
    if outcome.faults.relay_down:
        parts.append(f"SMTP server down {injected.relay_down_s:g} s")
    return ", ".join(parts) or "none"


def table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| scenario | load | faults injected | expected | delivered | duplicated | lost | unknown "
        "| failed (550 / other) | time to drain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        drain = f"{outcome.drain_s:.0f} s" if outcome.drain_s is not None else "did not drain"
        lines.append(
            f"| {outcome.name} | {outcome.emails:,} events -> emails | {_faults_cell(outcome)} | {outcome.expected:,} "
            f"| {outcome.delivered:,} | {outcome.duplicated_by_recipient} | {outcome.lost} | {outcome.unknown} "
            f"| {outcome.failed_550} / {outcome.failed_other} | {drain} |"
        )
    return lines


def paragraph(outcome: Outcome) -> str:
    injected = outcome.injected
    said = [
        f"**{outcome.name}** ({outcome.faults.describe_plain()}). {outcome.events:,} events recorded of "
        f"{outcome.emails:,} posted; messages by status: "
        + ", ".join(f"{status} {count:,}" for status, count in sorted(outcome.statuses.items()))
        + f"; {outcome.attempts:,} SMTP attempts recorded."
    ]
    if injected.post_failures:
        said.append(
            f"The api refused or failed {injected.post_failures} batch post(s) while Redis was away; each was "
            f"posted again as it was ({injected.posts_repeated} repeats), and {injected.duplicates_answered} "
            "events of the repeats were answered as duplicates of the first post."
        )
    if injected.died:
        said.append(
            f"**{len(injected.died)} worker main process(es) exited on their own** (the bench started a replacement "
            "for each, as a supervisor would): " + "; ".join(f"`{reason}`" for reason in injected.died) + "."
        )
    if outcome.faults.relay_down:
        after = injected.drained_after_relay_s
        said.append(
            f"The SMTP server was down for {injected.relay_down_s:g} s; once it was back, every message it was "
            + (f"to take was accepted within {after:.0f} s." if after is not None else "to take was never accepted.")
        )
    if injected.resumed_after_s:
        resumed = ", ".join(f"{value:.1f} s" if value is not None else "never" for value in injected.resumed_after_s)
        said.append(f"The sink accepted mail again after each Redis restart (from the restart): {resumed}.")
    if outcome.faults.refuse:
        said.append(
            f"{outcome.refused_550:,} addresses are refused by the sink (550); {outcome.failed_550:,} messages "
            f"ended failed with a 55x reply, and {outcome.refused_delivered} refused address(es) reached the sink."
        )
    if injected.answered_421:
        said.append(
            f"The sink answered 421 {injected.answered_421:,} times; {outcome.failed_other} message(s) ended failed "
            "for another reason (their attempts used up)."
        )
    if outcome.unknown:
        said.append(
            f"{outcome.unknown} message(s) are `unknown` (their delivery stopped between handing the message over "
            "and recording the reply: its worker was killed, or its task terminated when the broker connection "
            f"broke); {outcome.unknown_at_sink} of them did reach the sink, and none is resent "
            "(RELIABILITY.md: resending blindly risks the double send)."
        )
    if outcome.lost:
        said.append(
            "Lost, by their status in the database: "
            + ", ".join(f"{status} {count}" for status, count in outcome.lost_statuses.items())
            + "."
        )
    if outcome.duplicated_by_recipient or outcome.duplicated_by_message_id:
        said.append(
            f"Duplicates: {outcome.duplicated_by_recipient} extra copies by recipient, "
            f"{outcome.duplicated_by_message_id} by Message-ID."
        )
    mismatches = {status: count for status, count in outcome.at_sink_not_sent.items() if status != "unknown"}
    if outcome.sent_not_at_sink or mismatches:
        said.append(
            f"Database and sink disagree: {outcome.sent_not_at_sink} marked sent but not at the sink; at the sink "
            f"but not marked sent: {mismatches}."
        )
    else:
        said.append(
            "Database and sink agree: every message marked sent was accepted, and every one accepted is sent "
            "(or unknown, above)."
        )
    signs = ", ".join(f"{label} {count}" for label, count in outcome.log_findings.items() if count)
    if signs:
        said.append(f"Worker and scheduler logs: {signs}.")
    if not outcome.drained:
        said.append("**It did not drain**: nothing moved for the stall limit, so the run stopped there.")
    said.append(f"Scenario wall time, set-up included: {outcome.wall_s:.0f} s.")
    return " ".join(said)


def write_report(outcomes: list[Outcome], options: Options, command: str, wall_s: float, load: str) -> None:
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `{command}`, {wall_s / 60:.1f} min wall in all. "
        f"Machine: {machine_line()}. Source: {source_line()}. Load average at the end: "
        f"{' '.join(f'{value:.1f}' for value in os.getloadavg())} (other sessions share these two cores, so times "
        "are noisy; the counts are what this measures).",
        "",
        f"Each scenario, on a fresh stack (redis-server, SQLite, `tripmail api`, `tripmail scheduler`, "
        f"{options.workers} x `tripmail worker --concurrency {options.concurrency}`, the fault sink "
        "bench/fault_sink.py), posts "
        f"{load} through `POST /v1/events/batch` ({options.batch} events a batch, paced at {options.rate:g} events/s, "
        "each event with a key and a recipient of its own; a batch the api refuses is posted again unchanged). "
        f"Redis runs with `appendonly yes`, `appendfsync {options.appendfsync}` and `maxmemory-policy noeviction`: "
        "a restart by SIGTERM rewrites and fsyncs the AOF before redis-server exits, so the fsync policy only bears on "
        "a crash of Redis itself (not injected); everysec is the production setting RELIABILITY.md recommends. "
        f"Workers run with a visibility timeout of {VISIBILITY_TIMEOUT_S} s (task time limit "
        f"{TASK_TIME_LIMIT_S} s), so a killed worker's unacked tasks come back within the run, and the scheduler "
        f"publishes again a task Redis lost after {TASK_LOST_AFTER_S} s (`TRIPMAIL_TASK_LOST_AFTER_S`, "
        "tripmail/queue/ledger.py).",
        "",
        "Definitions: **expected** = emails posted minus the recipients the sink refuses with 550; **delivered** = "
        "expected recipients the sink accepted at least once; **duplicated** = extra copies the sink accepted (by "
        "recipient; each recipient gets one message); **lost** = expected recipients never accepted whose message is "
        "not `failed` or `unknown` in the database (or has no message at all); **unknown** = messages whose worker "
        "died between handing them to the SMTP server and recording the reply (never resent automatically); **time "
        "to drain** = first post to the last message becoming final in the database.",
        "",
        *table(outcomes),
        "",
        *(f"- {paragraph(outcome)}" for outcome in outcomes),
        "",
    ]
    record(
        options.output,
        "\n".join(lines),
        marks=(START_MARK, END_MARK),
        title="# Reliability under faults (`make reliability`, bench/reliability.py)",
    )


START_MARK = "<!-- bench.reliability: start (generated; replaced by each run) -->"
END_MARK = "<!-- bench.reliability: end -->"


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=20_000, help="emails (events) per scenario")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of: " + ", ".join(SCENARIOS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500, help="events per POST /v1/events/batch")
    parser.add_argument("--rate", type=float, default=400.0, help="events posted per second")
    parser.add_argument("--kill-min-s", type=float, default=3.0)
    parser.add_argument("--kill-max-s", type=float, default=6.0)
    parser.add_argument("--redis-down-s", type=float, default=2.0)
    parser.add_argument("--relay-down-s", type=float, default=300.0, help="how long relay-down stops the SMTP server")
    parser.add_argument("--stall-s", type=float, default=120.0, help="give up when nothing moved for this long")
    parser.add_argument("--appendfsync", choices=["everysec", "always"], default="everysec")
    parser.add_argument("--output", type=Path, default=REPORT)
    parser.add_argument("--workdir", type=Path, help="keep the stacks' databases and logs here (default: a temp dir)")
    args = parser.parse_args()
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return Options(
        emails=args.emails,
        scenarios=scenarios,
        workers=args.workers,
        concurrency=args.concurrency,
        batch=args.batch,
        rate=args.rate,
        kill_min_s=args.kill_min_s,
        kill_max_s=args.kill_max_s,
        redis_down_s=args.redis_down_s,
        relay_down_s=args.relay_down_s,
        stall_s=args.stall_s,
        appendfsync=args.appendfsync,
        output=args.output,
        workdir=args.workdir,
    )


def main() -> None:
    options = parse_options()
    began = time.monotonic()
    outcomes = []
    with contextlib.ExitStack() as cleanup:
        folder = options.workdir or Path(cleanup.enter_context(TemporaryDirectory(prefix="tripmail-reliability-")))
        folder.mkdir(parents=True, exist_ok=True)
        print(f"processes' logs in {folder}", flush=True)
        for name in options.scenarios:
            outcomes.append(run_scenario(name, SCENARIOS[name], options, folder))
            # Written after each scenario, so a long run that is stopped still leaves what it measured.
            command = "python -m bench.reliability " + " ".join(sys.argv[1:])
            write_report(outcomes, options, command.strip(), time.monotonic() - began, f"{options.emails:,} events")
    print("\n".join(table(outcomes)))
    print(f"written to {options.output} in {(time.monotonic() - began) / 60:.1f} min")


if __name__ == "__main__":
    main()

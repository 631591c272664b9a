"""Audience fan-out: from a recorded event to every send task enqueued, at two sizes, with peak memory.

Runs the worker's own code path (tripmail.ingest.flow.process_event, publishing real Celery tasks to a real
redis-server on a free port) in a fresh child process per measurement, so peak RSS is that work's alone.
The baseline, measured in the same run, is the floor for the same output: one bulk INSERT of the same message
rows plus publishing the same number of tasks, with no audience query and no contact loading.
"""

import json
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from tests.support.builders import apply_spec
from tests.support.polling import wait_until
from tests.support.ports import free_port, port_open
from tripmail import queue
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.ids import new_id, utcnow
from tripmail.ingest.flow import process_event
from tripmail.migrations import upgrade
from tripmail.models import Automation, AutomationStep, Contact, Event, Message, Workspace
from tripmail.queue import ByLane, make_celery
from tripmail.schemas.trigger import Audience, TriggerRequest

SIZES = ((20_000, 10_000), (100_000, 50_000))
CAMPAIGN = 4242
BATCH = Settings().send_batch_size


def populate(settings: Settings, total: int) -> int:
    sessions = make_sessionmaker(settings)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        apply_spec(
            session,
            {
                "workspace": "bench",
                "from": "Bench <bench@example.com>",
                "contact_fields": [{"name": "rank", "type": "number"}],
                "templates": [{"key": "t", "subject": "s", "text": "t"}],
                "automations": [{"name": "Bench", "id": CAMPAIGN, "steps": [{"send_email": {"template": "t"}}]}],
            },
        )
        workspace_id = session.scalars(select(Workspace.id)).one()
        rows = [
            {
                "id": f"c{index:07}",
                "workspace_id": workspace_id,
                "email": f"p{index}@example.com",
                "fields": {"rank": index},
                "consents": {"email": True},
                "created_at": now,
                "updated_at": now,
            }
            for index in range(total)
        ]
        for start in range(0, total, 10_000):
            session.execute(insert(Contact), rows[start : start + 10_000])
    sessions.kw["bind"].dispose()
    return workspace_id


def _enqueuer(settings: Settings) -> tuple[Any, list[int]]:
    celery = make_celery(settings)
    counter = [0]

    def enqueue(planned: ByLane) -> None:
        for transactional, message_ids in planned.lanes():
            for start in range(0, len(message_ids), BATCH):
                celery.send_task(
                    queue.DELIVER_MESSAGES,
                    args=[message_ids[start : start + BATCH]],
                    queue=queue.queue_for(transactional=transactional),
                )
                counter[0] += 1

    return enqueue, counter


def measure_fan_out(settings: Settings, workspace_id: int, matching: int, total: int, out: Any) -> None:
    enqueue, tasks = _enqueuer(settings)
    sessions = make_sessionmaker(settings)
    trigger = TriggerRequest(
        workspace_id=workspace_id, automation_id=CAMPAIGN, audience=Audience(query={"rank": {"$gte": total - matching}})
    )
    started = time.perf_counter()
    process_event(sessions, new_id(), trigger, enqueue=enqueue, clock=utcnow)
    elapsed = time.perf_counter() - started
    with sessions() as session:
        planned = session.scalar(select(Message.id).order_by(Message.id.desc()).limit(1))
    out.put({"seconds": elapsed, "tasks": tasks[0], "last_message": planned, "rss_mb": _peak_rss_mb()})


def measure_baseline(settings: Settings, workspace_id: int, matching: int, out: Any) -> None:
    enqueue, tasks = _enqueuer(settings)
    sessions = make_sessionmaker(settings)
    now = utcnow()
    with sessions.begin() as session:
        automation = session.get_one(Automation, CAMPAIGN)
        step = session.scalars(select(AutomationStep).where(AutomationStep.automation_id == automation.id)).one()
        event_id = new_id()
        session.add(
            Event(
                id=event_id, workspace_id=workspace_id, name="baseline", status="processed", request={}, received_at=now
            )
        )
    started = time.perf_counter()
    with sessions.begin() as session:
        contact_ids = [f"c{index:07}" for index in range(matching)]
        rows = [
            {
                "workspace_id": workspace_id,
                "event_id": event_id,
                "automation_id": automation.id,
                "step_id": step.id,
                "contact_id": contact_id,
                "template_id": step.config["template_id"],
                "to_address": "x@example.com",
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for contact_id in contact_ids
        ]
        ids = list(session.scalars(insert(Message).returning(Message.id), rows))
    enqueue(ByLane(bulk=ids))
    out.put({"seconds": time.perf_counter() - started, "tasks": tasks[0], "rss_mb": _peak_rss_mb()})


def measure_idle(out: Any) -> None:
    out.put({"rss_mb": _peak_rss_mb()})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(target: Any, *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=target, args=(*args, out))
    child.start()
    result: dict[str, Any] = out.get(timeout=600)
    child.join(timeout=60)
    return result


def main() -> None:
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    rows = []
    try:
        wait_until(lambda: port_open(port), timeout=15, what="redis-server")
        idle = in_child(measure_idle)["rss_mb"]
        for total, matching in SIZES:
            with tempfile.TemporaryDirectory() as folder:
                settings = Settings(
                    database_url=f"sqlite:///{Path(folder) / 'bench.db'}", redis_url=f"redis://127.0.0.1:{port}/0"
                )
                upgrade(settings.database_url)
                workspace_id = populate(settings, total)
                fan_out = in_child(measure_fan_out, settings, workspace_id, matching, total)
                baseline = in_child(measure_baseline, settings, workspace_id, matching)
                subprocess.run(["redis-cli", "-p", str(port), "flushall"], check=True, capture_output=True)
            rows.append((total, matching, fan_out, baseline))
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    print(f"idle worker process (imports only): peak RSS {idle:.0f} MB")
    print("| contacts | matching | fan-out s | tasks | ms per 1k | peak RSS MB | baseline s | fan-out / baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for total, matching, fan_out, baseline in rows:
        print(
            f"| {total:,} | {matching:,} | {fan_out['seconds']:.2f} | {fan_out['tasks']} | "
            f"{1000 * fan_out['seconds'] / matching * 1000:.1f} | {fan_out['rss_mb']:.0f} | "
            f"{baseline['seconds']:.2f} | {fan_out['seconds'] / baseline['seconds']:.2f}x |"
        )
    small, large = rows[0], rows[-1]
    growth = (large[2]["seconds"] / large[1]) / (small[2]["seconds"] / small[1])
    print(f"cost per target at {large[1]:,} vs {small[1]:,}: {growth:.2f}x (1.00 = linear)")
    json.dump([{"contacts": r[0], "matching": r[1], "fan_out": r[2], "baseline": r[3]} for r in rows], sys.stderr)


if __name__ == "__main__":
    main()

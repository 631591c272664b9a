"""The worker's own CPU per event, without Celery, the api or Redis: `python -m bench.worker_path`.

Runs the functions the worker's tasks call (tripmail.ingest.flow.process_events,
tripmail.delivery.flow.deliver_planned) in
this process against the quickstart's set-up on a fresh SQLite file, sending to the bench's counting sink in its
own process. Two shapes: one-contact events one task at a time (what 100 single requests a second become) and a
batch request's events (what `/v1/events/batch` becomes). Prints wall and CPU time (this process, all threads)
per event; the sink's CPU is not counted. For finding where the worker's time goes between `make bench` runs,
e.g. under `py-spy record -- python -m bench.worker_path`.
"""

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from bench.processes import PYTHON
from bench.quickstart import APPLY_FILE, EVENT, FIRST_NAME, recipient, reset_link
from tests.support.polling import wait_until
from tests.support.ports import free_port, port_open
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.delivery import flow
from tripmail.delivery.smtp import SendingLoop, parse_relays
from tripmail.ids import new_id, utcnow
from tripmail.ingest.flow import process_events
from tripmail.migrations import upgrade
from tripmail.models import Workspace
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest
from tripmail.setup.apply import apply_file
from tripmail.setup.spec import load_apply_file

BATCH_SIZE = Settings().send_batch_size


def triggers(workspace_id: int, first: int, count: int, domain: str) -> list[tuple[str, TriggerRequest]]:
    return [
        (
            new_id(),
            TriggerRequest(
                workspace_id=workspace_id,
                event=EVENT,
                key=f"{domain}-{index}",
                audience=Audience(email=recipient(index, f"{domain}.example.com")),
                contact_update=ContactUpdate(fields={"first_name": FIRST_NAME}),
                data={"forgot_password_link": reset_link(index)},
            ),
        )
        for index in range(first, first + count)
    ]


def timed(label: str, count: int, run: Callable[[], None]) -> None:
    if not count:
        return
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label}: {count:,} events, {wall / count * 1000:.2f} ms wall and {cpu / count * 1000:.2f} ms CPU per event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=300, help="one-contact events, one task each")
    parser.add_argument("--batch", type=int, default=1000, help="events of one batch request")
    parser.add_argument("--prefill", type=int, default=0, help="events recorded first, for a database not empty")
    options = parser.parse_args()
    port = free_port()
    sink = subprocess.Popen(
        [PYTHON, "-m", "bench.sink", "--port", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    with tempfile.TemporaryDirectory(prefix="tripmail-worker-path-") as folder:
        try:
            wait_until(lambda: port_open(port), what="the sink")
            settings = Settings(database_url=f"sqlite:///{Path(folder) / 'tripmail.db'}")
            upgrade(settings.database_url)
            sessions = make_sessionmaker(settings)
            with sessions.begin() as session:
                apply_file(session, load_apply_file(APPLY_FILE), now=utcnow())
                workspace_id = session.scalars(select(Workspace.id)).one()
            sending = SendingLoop(parse_relays(f"smtp://127.0.0.1:{port}"), size=4, timeout=30)

            def publish(message_ids: list[int], transactional: bool) -> None:
                flow.deliver_batch(
                    sessions, message_ids, run_id=new_id(), sending=lambda: sending, settings=settings, clock=utcnow
                )

            def run_task(pairs: list[tuple[str, TriggerRequest]]) -> None:
                """As worker.tasks.process_events: full batches are delivery tasks of their own (run here, one
                after the other), the rest is sent inline; the triggers are read back from their queued form."""
                run_id = new_id()
                queued = [(event_id, trigger.model_dump(mode="json")) for event_id, trigger in pairs]
                read_back = [(event_id, TriggerRequest.read_back(trigger)) for event_id, trigger in queued]
                flow.deliver_planned(
                    sessions,
                    lambda enqueue: process_events(
                        sessions, read_back, enqueue=enqueue, batch_size=BATCH_SIZE, clock=utcnow, run_id=run_id
                    ),
                    run_id=run_id,
                    sending=lambda: sending,
                    settings=settings,
                    publish=publish,
                    clock=utcnow,
                )

            if options.prefill:
                timed("prefill", options.prefill, lambda: run_task(triggers(workspace_id, 0, options.prefill, "pre")))
            run_task(triggers(workspace_id, 0, 20, "warm"))
            singles = triggers(workspace_id, 0, options.single, "single")

            def one_task_each() -> None:
                for pair in singles:
                    run_task([pair])

            timed("one-contact events, a task each", options.single, one_task_each)
            batch = triggers(workspace_id, 0, options.batch, "batch")
            timed(f"a batch of {options.batch:,} events", options.batch, lambda: run_task(batch))
        finally:
            sink.terminate()
            sink.wait()


if __name__ == "__main__":
    main()

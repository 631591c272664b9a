"""One event that cannot be processed, in the same task as other workspaces' events, on the shared stack: it fails
alone, with its reason on its event, once; the others' mail goes out.

The poison is published straight to the queue, as an api that accepted it (an older version, or one with a looser
setting) would have: the api refuses it today, and the worker must not depend on that.
"""

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tripmail import queue
from tripmail.config import Settings
from tripmail.ids import new_id
from tripmail.models import Event, Workspace
from tripmail.schemas.trigger import Audience, TriggerRequest

# The probe that stalled a worker: answered 200, then its task tried again forever on "too many SQL variables".
PROBE_ITEMS = 250_001


def workspace_id(db: sessionmaker[Session], key: str) -> int:
    with db() as session:
        return session.scalars(select(Workspace.id).where(Workspace.key == key)).one()


def worker_log(workdir: Path, workers: list[str]) -> str:
    return "".join((workdir / f"{name}.log").read_text(errors="replace") for name in workers)


@pytest.mark.timeout(120)
def test_a_poisoned_event_fails_alone_and_the_events_sharing_its_task_are_sent(
    stack_settings: Settings,
    db: sessionmaker[Session],
    workers: list[str],
    workdir: Path,
    sink: Sink,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    poison_id = new_id()
    poison = TriggerRequest(
        workspace_id=workspace_id(db, tenant.key),
        event="FORGOT_PASSWORD",
        audience=Audience(query={"Custom_ID": {"$in": [str(n) for n in range(PROBE_ITEMS)]}}),
    )
    other = workspace_id(db, other_tenant.key)
    good = [
        (new_id(), TriggerRequest(workspace_id=other, event="ONLY_OTHER", audience=Audience(email=email)))
        for email in (f"{other_tenant.key}-1@example.com", f"{other_tenant.key}-2@example.com")
    ]
    task_id = new_id()
    queue.make_celery(stack_settings).send_task(
        queue.PROCESS_EVENTS,
        args=[[[event_id, trigger.model_dump(mode="json")] for event_id, trigger in [(poison_id, poison), *good]]],
        queue=queue.queue_for(transactional=True),
        task_id=task_id,
    )

    wait_until(lambda: sink.count_from(other_tenant.sender) == 2, what="the other workspace's two emails")
    with db() as session:
        failed = session.get_one(Event, poison_id)
        sent = [session.get_one(Event, event_id).status for event_id, _ in good]
    assert sent == ["processed", "processed"]
    assert failed.status == "failed"
    assert failed.error is not None
    assert "custom_request.Custom_ID.$in: a query holds at most" in failed.error, failed.error
    succeeded = f"Task {queue.PROCESS_EVENTS}[{task_id}] succeeded"

    def finished() -> str | None:
        log = worker_log(workdir, workers)
        return log if succeeded in log else None

    log = wait_until(finished, what=succeeded)
    assert f"{queue.PROCESS_EVENTS}[{task_id}] retry" not in log

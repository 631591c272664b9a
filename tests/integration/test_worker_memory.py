"""A worker's memory through a real worker held to a memory limit: a large attachment to many recipients must go
out without the worker holding a batch of built messages at once."""

import base64
import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.builders import CAMPAIGN, campaign_audience, sender_of
from tests.support.hashing_sink import running_hashing_sink
from tests.support.message_states import workspace_messages_settled
from tests.support.polling import wait_until
from tests.support.stack import OwnStack, pool_processes
from tripmail import queue
from tripmail.config import Settings
from tripmail.ids import new_id
from tripmail.models import MessageAttempt, Workspace
from tripmail.queue import make_publisher
from tripmail.schemas.trigger import Attachment, Audience, TriggerRequest

MiB = 1024 * 1024
ATTACHMENT_BYTES = 10 * MiB
RECIPIENTS = 500
WORKER_MEMORY = 1024 * MiB


@pytest.fixture
def own_settings(own_settings: Settings) -> Settings:
    # Two batches of 250 messages of 14 MB each take longer than the 10 s the crash tests give a task.
    return own_settings.model_copy(update={"task_time_limit_s": 300, "visibility_timeout_s": 600})


def peak_rss(pid: int) -> int:
    """The most memory a process has held at once (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def publish_event(settings: Settings, workspace_id: int, attachment: bytes) -> None:
    """What the api queues for a campaign started with an attachment (altcraft's `attach`)."""
    trigger = TriggerRequest(
        workspace_id=workspace_id,
        automation_id=CAMPAIGN,
        audience=Audience(query={"rank": {"$gte": 0}}),
        attachments=[
            Attachment(
                name="report.pdf",
                content_type="application/pdf",
                content_base64=base64.b64encode(attachment).decode("ascii"),
            )
        ],
        create_contact=False,
    )
    publisher = make_publisher(settings)
    publisher.send_task(
        queue.PROCESS_EVENTS,
        args=[[(new_id(), trigger.model_dump(mode="json"))]],
        queue=queue.queue_for(transactional=False),
    )


@pytest.mark.timeout(300)
def test_a_10_mib_attachment_to_500_recipients_from_a_worker_held_to_1_gib(stack: OwnStack) -> None:
    key, _token, emails = campaign_audience(stack.db, RECIPIENTS)
    sender = sender_of(key)
    attachment = random.Random(7).randbytes(ATTACHMENT_BYTES)
    # The attachment's body as MIME sends it: base64 in lines of 76, each ended by a CRLF.
    expected = hashlib.sha256(base64.encodebytes(attachment).replace(b"\n", b"\r\n")).hexdigest()
    with stack.db() as session:
        workspace_id = session.scalars(select(Workspace.id).where(Workspace.key == key)).one()

    with running_hashing_sink(stack.smtp_port) as sink:
        worker = stack.start_worker(max_data_bytes=WORKER_MEMORY)
        publish_event(stack.settings, workspace_id, attachment)
        final = wait_until(
            lambda: workspace_messages_settled(stack.db, key, RECIPIENTS), timeout=240, what="every message settled"
        )
        peaks = {pid: peak_rss(pid) for pid in pool_processes(worker)}
        arrivals = sink.from_sender(sender)
    log = (stack.workdir / "worker.log").read_text()
    print(f"peak RSS of the pool processes: {', '.join(f'{peak / MiB:.0f} MiB' for peak in peaks.values())}")
    with stack.db() as session:
        attempts = session.scalar(select(func.count()).select_from(MessageAttempt))

    assert final == {"sent": RECIPIENTS}
    assert Counter(address for arrival in arrivals for address in arrival.rcpt_tos) == dict.fromkeys(emails, 1)
    assert [arrival.attachment_sha256 for arrival in arrivals] == [expected] * RECIPIENTS
    # Each message sent at its first attempt: no process ran out of memory and had its batch tried again.
    assert attempts == RECIPIENTS
    assert "MemoryError" not in log and "WorkerLostError" not in log

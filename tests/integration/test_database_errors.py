"""A database error while a worker records an event, through the real stack: the error stored for the event and
the worker's log name the statement and the cause, never the contact's address or fields (the statement's
parameters)."""

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_token
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tripmail.models import Workspace

REFUSAL = "contacts refused by the test"


# SQLite only: the fault is a trigger, which SQLite writes in SQL alone.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_database_error_stored_or_logged_for_an_event_shows_no_contact_data(
    db: sessionmaker[Session], api_url: str, tenant: Tenant, sink: Sink, workers: list[str], workdir: Path
) -> None:
    email = f"private-{tenant.key}@example.com"
    first_name = f"Zebulon-{tenant.key}"
    with db.begin() as session:
        workspace_id = session.scalars(select(Workspace.id).where(Workspace.key == tenant.key)).one()
        reader = make_token(session, tenant.key, ["events:read", "contacts:read"])
    # The database itself refuses this workspace's contacts, as a constraint would: an error that is not
    # transient, so the event is failed with it.
    trigger = f"refuse_contacts_{workspace_id}"
    with db.begin() as session:
        session.execute(
            text(
                f"CREATE TRIGGER {trigger} BEFORE INSERT ON contacts WHEN NEW.workspace_id = {workspace_id} "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
            )
        )
    try:
        accepted = httpx.post(
            f"{api_url}/v1/events",
            json={"event": "FORGOT_PASSWORD", "contact": {"email": email, "fields": {"first_name": first_name}}},
            headers={"Authorization": f"Bearer {tenant.token}"},
            timeout=10,
        )
        assert accepted.status_code == 202, accepted.text

        def failed() -> dict[str, object] | None:
            answer = httpx.get(
                f"{api_url}/v1/events/{accepted.json()['id']}",
                headers={"Authorization": f"Bearer {reader}"},
                timeout=10,
            )
            return answer.json() if answer.status_code == 200 and answer.json()["status"] == "failed" else None

        event = wait_until(failed, what="the event failed")
    finally:
        with db.begin() as session:
            session.execute(text(f"DROP TRIGGER {trigger}"))

    error = str(event["error"])
    assert REFUSAL in error and "INSERT INTO contacts" in error
    assert email not in error and first_name not in error
    logged = "".join((workdir / f"{name}.log").read_text(errors="replace") for name in workers)
    assert REFUSAL in logged
    assert email not in logged and first_name not in logged
    assert sink.to(email) == []

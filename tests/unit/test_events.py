from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import apply_spec, make_template, make_workspace, password_reset_spec
from tripmail.contacts.store import upsert_contact
from tripmail.delivery.claims import claim_messages
from tripmail.delivery.envelopes import prepare_envelopes
from tripmail.delivery.suppressions import suppress
from tripmail.ids import new_id
from tripmail.ingest.event_types import get_or_create_event_type
from tripmail.ingest.flow import process_events
from tripmail.ingest.recording import record_event, record_events, record_failed_event
from tripmail.models import Contact, Event, EventType, Message, MessageStatus
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def trigger(workspace_id: int, event: str = "forgot_password", **overrides: Any) -> TriggerRequest:
    values: dict[str, Any] = {
        "workspace_id": workspace_id,
        "event": event,
        "audience": Audience(email=" Ann@Example.COM "),
        "contact_update": ContactUpdate(fields={"first_name": "Ann"}),
        "data": {"forgot_password_link": "https://x/r"},
    }
    return TriggerRequest(**(values | overrides))


def setup(sessions: sessionmaker[Session], **automation: Any) -> int:
    with sessions.begin() as session:
        return make_workspace(session, password_reset_spec("acme", **automation))


def test_event_key_matches_case_insensitively_and_plans_one_message(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)
    event_id = new_id()
    with sessions.begin() as session:
        planned = record_event(session, event_id, trigger(workspace_id), now=NOW)
    with sessions() as session:
        message = session.scalars(select(Message)).one()
        event = session.get_one(Event, event_id)
        contact = session.scalars(select(Contact)).one()
    assert (planned.transactional, planned.bulk) == ([message.id], [])  # the password reset, in the fast lane
    assert (message.status, message.to_address) == (MessageStatus.PENDING, "ann@example.com")
    assert (event.status, event.matched_automations, event.contact_id) == ("processed", 1, contact.id)
    assert contact.fields == {"first_name": "Ann"}


def test_recording_the_same_event_again_plans_nothing_new(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)
    event_id = new_id()
    with sessions.begin() as session:
        first = record_event(session, event_id, trigger(workspace_id), now=NOW).ids
    with sessions.begin() as session:
        again = record_event(session, event_id, trigger(workspace_id), now=NOW).ids
    with sessions() as session:
        assert len(session.scalars(select(Message)).all()) == 1
        assert len(session.scalars(select(Event)).all()) == 1
    assert again == first


def test_unmatched_event_is_recorded_with_its_new_event_type(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)
    event_id = new_id()
    with sessions.begin() as session:
        assert record_event(session, event_id, trigger(workspace_id, event="signed_up"), now=NOW).ids == []
    with sessions() as session:
        assert session.get_one(Event, event_id).matched_automations == 0
        assert sorted(session.scalars(select(EventType.key))) == ["FORGOT_PASSWORD", "signed_up"]
        assert session.scalars(select(Message)).all() == []


def test_paused_automation_does_not_run(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions, status="paused")
    with sessions.begin() as session:
        assert record_event(session, new_id(), trigger(workspace_id), now=NOW).ids == []


def test_marketing_mail_respects_consent_transactional_does_not(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions, transactional=False)
    no_consent = ContactUpdate(email_consent=False)
    with sessions.begin() as session:
        assert record_event(session, new_id(), trigger(workspace_id, contact_update=no_consent), now=NOW).ids == []
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme", transactional=True))
    with sessions.begin() as session:
        assert len(record_event(session, new_id(), trigger(workspace_id), now=NOW).ids) == 1


def test_a_transactional_step_of_a_marketing_automation_mails_without_consent_or_unsubscribe(
    sessions: sessionmaker[Session],
) -> None:
    """seed 002's "Send obligatory (transactional) email" block, inside a marketing automation."""
    steps = [{"send_email": {"template": "reset"}}, {"send_email": {"template": "reset", "transactional": True}}]
    workspace_id = setup(sessions, transactional=False, steps=steps)
    with sessions.begin() as session:
        refused = record_event(
            session, new_id(), trigger(workspace_id, contact_update=ContactUpdate(email_consent=False)), now=NOW
        )
        both = record_event(
            session, new_id(), trigger(workspace_id, audience=Audience(email="bob@example.com")), now=NOW
        )
    with sessions.begin() as session:
        prepared = prepare_envelopes(session, refused.ids + both.ids, now=NOW, public_url="https://mail.example")
    unsubscribe = {
        envelope.key: message_from_bytes(b"".join(envelope.content), policy=default)["List-Unsubscribe"]
        for envelope in prepared.envelopes
    }
    # The obligatory step's message goes to the fast lane, the marketing one's to bulk.
    [obligatory], [marketing] = both.transactional, both.bulk
    assert refused.bulk == []  # the obligatory step's message only: no consent to the marketing one
    assert unsubscribe[refused.transactional[0]] is None
    assert unsubscribe[obligatory] is None
    assert unsubscribe[marketing] is not None
    assert str(unsubscribe[marketing]).strip().startswith("<https://mail.example/unsubscribe/")


def test_contact_fields_merge_existing_keys_updated_others_kept(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)
    with sessions.begin() as session:
        record_event(
            session, new_id(), trigger(workspace_id, contact_update=ContactUpdate(fields={"a": 1, "b": 1})), now=NOW
        )
    with sessions.begin() as session:
        record_event(
            session, new_id(), trigger(workspace_id, contact_update=ContactUpdate(fields={"b": 2, "c": 3})), now=NOW
        )
    with sessions() as session:
        assert session.scalars(select(Contact.fields)).one() == {"a": 1, "b": 2, "c": 3}


def test_failed_processing_is_recorded_with_its_reason(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)
    event_id = new_id()
    with sessions.begin() as session:
        record_failed_event(session, event_id, trigger(workspace_id), "OperationalError: database is locked", now=NOW)
    with sessions.begin() as session:
        record_failed_event(session, event_id, trigger(workspace_id), "again", now=NOW)
    with sessions() as session:
        event = session.get_one(Event, event_id)
    assert (event.status, event.error, event.name) == (
        "failed",
        "OperationalError: database is locked",
        "forgot_password",
    )


def test_a_template_that_raises_fails_its_message_alone(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)
    with sessions.begin() as session:
        apply_spec(
            session,
            password_reset_spec("acme") | {"templates": [make_template("reset", "s", "{{ data.amount + 1 }}")]},
        )
    with sessions.begin() as session:
        bad = record_event(session, new_id(), trigger(workspace_id, data={"amount": "12"}), now=NOW).ids
        good = record_event(session, new_id(), trigger(workspace_id, data={"amount": 12}), now=NOW).ids
    with sessions.begin() as session:
        claim_messages(session, bad + good, run_id="run-1", now=NOW)
    with sessions.begin() as session:
        prepared = prepare_envelopes(session, bad + good, now=NOW, public_url="https://mail.example")
    assert [envelope.key for envelope in prepared.envelopes] == good
    [failure] = prepared.failures
    assert failure.key == bad[0]
    assert "TypeError" in failure.reply


def test_a_rolled_back_transaction_leaves_no_event_type_or_contact(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)

    def unit_of_work_that_fails() -> None:
        with sessions.begin() as session:
            get_or_create_event_type(session, workspace_id, "rolled_back", now=NOW)
            upsert_contact(session, workspace_id, Audience(email="gone@example.com"), ContactUpdate(), now=NOW)
            raise RuntimeError("the rest of the unit of work failed")

    with pytest.raises(RuntimeError):
        unit_of_work_that_fails()
    with sessions() as session:
        assert session.scalars(select(EventType).where(EventType.key == "rolled_back")).all() == []
        assert session.scalars(select(Contact).where(Contact.email == "gone@example.com")).all() == []


def test_creating_what_exists_returns_the_existing_row(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)
    with sessions.begin() as session:
        first = get_or_create_event_type(session, workspace_id, "Signed_Up", now=NOW)
        again = get_or_create_event_type(session, workspace_id, "SIGNED_UP", now=NOW)
        ann = upsert_contact(session, workspace_id, Audience(email="ann@example.com"), ContactUpdate(), now=NOW)
        ann_again = upsert_contact(session, workspace_id, Audience(email="ANN@example.com"), ContactUpdate(), now=NOW)
    assert (first.id, ann.id) == (again.id, ann_again.id)


def test_a_duplicate_that_slipped_past_redis_sends_nothing(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)
    first_id, second_id, later_id = new_id(), new_id(), new_id()
    with sessions.begin() as session:
        assert len(record_event(session, first_id, trigger(workspace_id, key="reset-1"), now=NOW).ids) == 1
    with sessions.begin() as session:
        assert record_event(session, second_id, trigger(workspace_id, key="reset-1"), now=NOW).ids == []
    with sessions.begin() as session:
        after_window = NOW + timedelta(hours=24, seconds=1)
        assert len(record_event(session, later_id, trigger(workspace_id, key="reset-1"), now=after_window).ids) == 1
    with sessions() as session:
        second = session.get_one(Event, second_id)
    assert (second.status, second.error) == ("duplicate", f"duplicate of event {first_id}")


def test_the_same_key_with_other_content_is_another_event(sessions: sessionmaker[Session]) -> None:
    # esputnik's keyValue names the contact: a second, different event for it must still send.
    workspace_id = setup(sessions)
    first_id, other_id, in_one_go, repeat = new_id(), new_id(), new_id(), new_id()
    with sessions.begin() as session:
        assert len(record_event(session, first_id, trigger(workspace_id, key="ann"), now=NOW).ids) == 1
    other_link = trigger(workspace_id, key="ann", data={"forgot_password_link": "https://x/other"})
    with sessions.begin() as session:
        assert len(record_event(session, other_id, other_link, now=NOW).ids) == 1
    third_link = trigger(workspace_id, key="ann", data={"forgot_password_link": "https://x/third"})
    with sessions.begin() as session:
        pending = record_events(session, [(in_one_go, third_link), (repeat, third_link)], now=NOW)
        assert len(pending.ids) == 1
    with sessions() as session:
        statuses = [session.get_one(Event, event_id).status for event_id in (first_id, other_id, in_one_go, repeat)]
    assert statuses == ["processed", "processed", "processed", "duplicate"]


@pytest.mark.parametrize("refused_on_retry", [False, True], ids=["recorded together", "recorded one by one"])
def test_a_task_run_again_first_releases_what_its_earlier_try_claimed(
    sessions: sessionmaker[Session], refused_on_retry: bool
) -> None:
    workspace_id = setup(sessions)
    pairs = [(new_id(), trigger(workspace_id))]
    first_try: list[int] = []
    process_events(
        sessions,
        pairs,
        enqueue=lambda planned: first_try.extend(planned.ids),
        batch_size=10,
        clock=lambda: NOW,
        run_id="run-1",
    )
    with sessions.begin() as session:  # the earlier try claimed its message, then died before handing it over
        assert list(claim_messages(session, first_try, run_id="run-1", now=NOW)) == first_try
    if refused_on_retry:  # a contact id that names no one cannot create a contact: the chunk is split
        pairs.append((new_id(), trigger(workspace_id, audience=Audience(contact_id="no-such-contact"))))

    again: list[int] = []
    process_events(
        sessions,
        pairs,
        enqueue=lambda planned: again.extend(planned.ids),
        batch_size=10,
        clock=lambda: NOW,
        run_id="run-1",
    )
    with sessions() as session:
        message = session.scalars(select(Message)).one()
        failed = session.scalars(select(Event.id).where(Event.status == "failed")).all()
    assert again == first_try == [message.id]
    assert (message.status, message.attempts) == (MessageStatus.PENDING, 0)
    assert failed == [pairs[1][0]] if refused_on_retry else failed == []


def test_events_recorded_together_decide_as_if_one_after_the_other(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions)
    with sessions.begin() as session:
        suppress(session, workspace_id, "bounced@example.com", "550 no such mailbox", now=NOW)
    redelivered = new_id()
    with sessions.begin() as session:
        [earlier_message] = record_events(session, [(redelivered, trigger(workspace_id, key="r-0"))], now=NOW).ids
    first, duplicate, bounced, other = new_id(), new_id(), new_id(), new_id()
    together = [
        (redelivered, trigger(workspace_id, key="r-0")),
        (first, trigger(workspace_id, key="r-1")),
        (duplicate, trigger(workspace_id, key="r-1")),
        (bounced, trigger(workspace_id, key="r-2", audience=Audience(email="bounced@example.com"))),
        (other, trigger(workspace_id, key="r-3", audience=Audience(email="bob@example.com"))),
    ]
    with sessions.begin() as session:
        planned = record_events(session, together, now=NOW)
    with sessions() as session:
        statuses = dict(session.execute(select(Event.id, Event.status)).all())
        messages = {row.event_id: row for row in session.execute(select(Message.event_id, Message.id, Message.status))}
    assert statuses == {
        redelivered: "processed",
        first: "processed",
        duplicate: "duplicate",
        bounced: "processed",
        other: "processed",
    }
    assert set(messages) == {redelivered, first, bounced, other}
    assert messages[bounced].status == MessageStatus.SUPPRESSED
    # The redelivered event's message is still to send; the suppressed one is not.
    assert sorted(planned.ids) == sorted([earlier_message, messages[first].id, messages[other].id])

from datetime import UTC, datetime

import pytest
from pydantic import JsonValue
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import apply_spec, make_contact, make_workspace, password_reset_spec
from tripmail.contacts.audience import MAX_TERMS
from tripmail.ids import new_id
from tripmail.ingest import fan_out
from tripmail.ingest.fan_out import fan_out_chunk
from tripmail.ingest.flow import process_event, process_events
from tripmail.ingest.recording import record_event
from tripmail.models import Automation, Contact, Event, Message
from tripmail.queue import ByLane
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def audience_of_seven(sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> TriggerRequest:
    monkeypatch.setattr(fan_out, "CHUNK", 3)
    with sessions.begin() as session:
        workspace_id = make_workspace(
            session, password_reset_spec("acme") | {"contact_fields": [{"name": "score", "type": "number"}]}
        )
        for index in range(10):
            make_contact(
                session,
                workspace_id,
                f"p{index}@example.com",
                now=NOW,
                contact_id=f"c{index:02}",
                fields={"score": index},
            )
    query = {"score": {"$gte": 3}}
    return TriggerRequest(workspace_id=workspace_id, event="FORGOT_PASSWORD", audience=Audience(query=query))


def test_fan_out_plans_each_chunk_then_enqueues_it(
    sessions: sessionmaker[Session], audience_of_seven: TriggerRequest
) -> None:
    event_id = new_id()
    enqueued: list[list[int]] = []

    def enqueue(planned: ByLane) -> None:
        with sessions() as session:  # what was enqueued is already committed
            assert session.scalar(select(func.count()).where(Message.id.in_(planned.ids))) == len(planned.ids)
        enqueued.append(planned.ids)

    process_event(sessions, event_id, audience_of_seven, enqueue=enqueue, clock=lambda: NOW)

    assert [len(batch) for batch in enqueued] == [0, 3, 3, 1]
    with sessions() as session:
        recipients = session.scalars(select(Message.to_address).order_by(Message.to_address)).all()
        event = session.get_one(Event, event_id)
    assert recipients == [f"p{index}@example.com" for index in range(3, 10)]
    assert (event.status, event.fanout_cursor, event.contact_id) == ("processed", "c09", "c03")


def test_a_redelivered_task_plans_nothing_new(
    sessions: sessionmaker[Session], audience_of_seven: TriggerRequest
) -> None:
    event_id = new_id()
    process_event(sessions, event_id, audience_of_seven, enqueue=lambda planned: None, clock=lambda: NOW)
    again: list[int] = []
    process_event(
        sessions, event_id, audience_of_seven, enqueue=lambda planned: again.extend(planned.ids), clock=lambda: NOW
    )
    with sessions() as session:
        assert session.scalar(select(func.count(Message.id))) == 7
    assert len(again) == 7  # the pending ones are enqueued again; claiming keeps each sent once


def test_a_fan_out_cut_short_resumes_after_its_cursor(
    sessions: sessionmaker[Session], audience_of_seven: TriggerRequest
) -> None:
    event_id = new_id()
    with sessions.begin() as session:
        record_event(session, event_id, audience_of_seven, now=NOW)
    with sessions.begin() as session:
        first, done = fan_out_chunk(session, event_id, now=NOW)
    assert (len(first.ids), done) == (3, False)
    rest: list[int] = []
    process_event(
        sessions, event_id, audience_of_seven, enqueue=lambda planned: rest.extend(planned.ids), clock=lambda: NOW
    )
    with sessions() as session:
        assert session.scalar(select(func.count(Message.id))) == 7
    assert sorted(rest) == sorted(set(rest))
    assert len(rest) == 7


def test_messages_of_many_events_share_delivery_batches(
    sessions: sessionmaker[Session], audience_of_seven: TriggerRequest
) -> None:
    workspace_id = audience_of_seven.workspace_id
    one_each = [
        (new_id(), TriggerRequest(workspace_id=workspace_id, event="forgot_password", audience=Audience(email=email)))
        for email in ("a@example.com", "b@example.com", "c@example.com")
    ]
    enqueued: list[list[int]] = []

    pairs = [*one_each, (new_id(), audience_of_seven)]
    process_events(
        sessions, pairs, enqueue=lambda planned: enqueued.append(planned.ids), batch_size=4, clock=lambda: NOW
    )

    # 3 one-contact events and an audience of 7 (planned 3 at a time): 10 messages in batches of 4, none twice.
    assert [len(batch) for batch in enqueued] == [4, 4, 2]
    with sessions() as session:
        planned = set(session.scalars(select(Message.id)))
    assert sorted(id_ for batch in enqueued for id_ in batch) == sorted(planned)


def test_a_delivery_batch_holds_the_messages_of_one_lane(
    sessions: sessionmaker[Session], audience_of_seven: TriggerRequest
) -> None:
    workspace_id = audience_of_seven.workspace_id
    spec = password_reset_spec("acme")
    spec["automations"].append(
        {
            "name": "Newsletter",
            "trigger": "NEWSLETTER",
            "transactional": False,
            "steps": spec["automations"][0]["steps"],
        }
    )
    with sessions.begin() as session:
        apply_spec(session, spec)
    resets = [
        (new_id(), TriggerRequest(workspace_id=workspace_id, event="forgot_password", audience=Audience(email=email)))
        for email in ("a@example.com", "b@example.com", "c@example.com")
    ]
    campaign = audience_of_seven.model_copy(update={"event": "NEWSLETTER"})
    enqueued: list[ByLane] = []

    process_events(sessions, [*resets, (new_id(), campaign)], enqueue=enqueued.append, batch_size=4, clock=lambda: NOW)

    # The campaign's 7 messages fill a bulk batch of 4; what is left of each lane is enqueued last, to be sent inline.
    assert [(len(batch.transactional), len(batch.bulk)) for batch in enqueued] == [(0, 4), (3, 3)]
    with sessions() as session:
        by_automation = session.execute(
            select(Automation.name, Message.id).join(Automation, Message.automation_id == Automation.id)
        ).all()
    assert sorted(i for batch in enqueued for i in batch.transactional) == sorted(
        i for name, i in by_automation if name == "Password reset"
    )
    assert sorted(i for batch in enqueued for i in batch.bulk) == sorted(
        i for name, i in by_automation if name == "Newsletter"
    )


def test_a_batch_recorded_together_merges_contacts_and_catches_its_own_duplicates(
    sessions: sessionmaker[Session], audience_of_seven: TriggerRequest
) -> None:
    workspace_id = audience_of_seven.workspace_id

    def reset(email: str, key: str, **fields: JsonValue) -> tuple[str, TriggerRequest]:
        update = ContactUpdate(fields=fields)
        trigger = TriggerRequest(
            workspace_id=workspace_id,
            event="forgot_password",
            key=key,
            audience=Audience(email=email),
            contact_update=update,
        )
        return new_id(), trigger

    batch = [reset("p3@example.com", "k1", plan="pro"), reset("new@example.com", "k2"), reset("new@example.com", "k2")]
    enqueued: list[list[int]] = []
    process_events(
        sessions, batch, enqueue=lambda planned: enqueued.append(planned.ids), batch_size=10, clock=lambda: NOW
    )

    with sessions() as session:
        statuses = [session.get_one(Event, event_id).status for event_id, _ in batch]
        p3 = session.scalars(select(Contact).where(Contact.email == "p3@example.com")).one()
        created = session.scalars(select(Contact).where(Contact.email == "new@example.com")).all()
        planned = session.scalars(select(Message.to_address).order_by(Message.id)).all()
    assert statuses == ["processed", "processed", "duplicate"]
    assert p3.fields == {"score": 3, "plan": "pro"}
    assert len(created) == 1
    assert planned == ["p3@example.com", "new@example.com"]
    assert [len(ids) for ids in enqueued] == [2]


def test_an_event_refused_in_a_batch_fails_alone(
    sessions: sessionmaker[Session], audience_of_seven: TriggerRequest
) -> None:
    workspace_id = audience_of_seven.workspace_id
    good = (
        new_id(),
        TriggerRequest(workspace_id=workspace_id, event="forgot_password", audience=Audience(email="a@example.com")),
    )
    nobody = Audience(email_md5="0" * 32)  # names a contact by hash: it cannot be created, and nobody has it
    refused = (new_id(), TriggerRequest(workspace_id=workspace_id, event="forgot_password", audience=nobody))
    enqueued: list[list[int]] = []

    process_events(
        sessions,
        [refused, good],
        enqueue=lambda planned: enqueued.append(planned.ids),
        batch_size=10,
        clock=lambda: NOW,
    )

    with sessions() as session:
        failed = session.get_one(Event, refused[0])
        processed = session.get_one(Event, good[0])
    assert (failed.status, processed.status) == ("failed", "processed")
    assert "no contact matches the audience" in (failed.error or "")
    assert [len(ids) for ids in enqueued] == [1]


def test_an_event_that_fails_for_good_fails_alone_and_the_others_go_on(
    sessions: sessionmaker[Session], audience_of_seven: TriggerRequest
) -> None:
    workspace_id = audience_of_seven.workspace_id
    over_budget = Audience(query={"score": {"$in": list(range(MAX_TERMS))}})
    poisons = [
        # Refused by the audience's compiler once recorded as fanning out.
        (new_id(), TriggerRequest(workspace_id=workspace_id, event="FORGOT_PASSWORD", audience=over_budget)),
        # Refused by the database, every time: the workspace was deleted after the api accepted its events.
        (new_id(), TriggerRequest(workspace_id=workspace_id + 1000, event="FORGOT_PASSWORD", audience=Audience())),
        (new_id(), TriggerRequest(workspace_id=workspace_id + 1000, event="x", audience=Audience(email="a@b.example"))),
    ]
    single = (
        new_id(),
        TriggerRequest(workspace_id=workspace_id, event="forgot_password", audience=Audience(email="a@example.com")),
    )
    many = (new_id(), audience_of_seven)
    enqueued: list[list[int]] = []

    process_events(
        sessions,
        [*poisons, single, many],
        enqueue=lambda planned: enqueued.append(planned.ids),
        batch_size=100,
        clock=lambda: NOW,
    )

    with sessions() as session:
        statuses = [getattr(session.get(Event, event_id), "status", None) for event_id, _ in [*poisons, single, many]]
        reason = session.get_one(Event, poisons[0][0]).error
    assert statuses == ["failed", None, None, "processed", "processed"]
    assert reason == (
        f"QueryError: custom_request.score.$in: a query holds at most {MAX_TERMS} conditions and list items in all; "
        f"with the {MAX_TERMS} here it holds {MAX_TERMS + 2}"
    )
    assert [len(ids) for ids in enqueued] == [1 + 7]

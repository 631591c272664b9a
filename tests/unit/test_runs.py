"""Automations with conditions and contact updates: each event's run chooses its messages when it is recorded."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import apply_spec, make_workspace
from tripmail.automations.runs import carry_on, due_runs, mark_handed_out
from tripmail.errors import InvalidConfig
from tripmail.ids import new_id
from tripmail.ingest.fan_out import fan_out_chunk
from tripmail.ingest.recording import record_event, record_events
from tripmail.models import AutomationRun, AutomationStep, Contact, Message, Template
from tripmail.queue import HAND_OUT_AGAIN_AFTER
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest
from tripmail.setup.spec import ApplyFile

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def purchase_spec(**automation: Any) -> dict[str, Any]:
    """Seed 004's purchase flow: a thank-you for every purchase, a VIP note above 100, the plan kept on the
    contact."""
    return {
        "workspace": "shop",
        "from": "Shop <noreply@shop.example.com>",
        "contact_fields": [{"name": "last_amount", "type": "number"}],
        "templates": [
            {"key": key, "subject": f"{key} {{{{ data.amount }}}}", "text": f"{key} for {{{{ contact.email }}}}"}
            for key in ("thanks", "vip", "regular", "receipt")
        ],
        "automations": [
            {
                "name": "Purchase",
                "trigger": "purchase_completed",
                "transactional": True,
                "steps": [
                    {"update_contact": {"set": {"plan": "{{ data.items[0] }}", "last_amount": "{{ data.amount }}"}}},
                    {
                        "condition": {
                            "if": "data.amount > 100",
                            "then": [{"send_email": {"template": "vip"}}],
                            "else": [{"send_email": {"template": "regular"}}],
                        }
                    },
                    {"send_email": {"template": "receipt"}},
                ],
            }
            | automation
        ],
    }


def setup(sessions: sessionmaker[Session], spec: dict[str, Any]) -> int:
    with sessions.begin() as session:
        return make_workspace(session, spec)


def purchase(workspace_id: int, email: str, amount: Any) -> TriggerRequest:
    return TriggerRequest(
        workspace_id=workspace_id,
        event="purchase_completed",
        audience=Audience(email=email),
        data={"amount": amount, "items": ["Pro Plan - Annual"]},
    )


def planned_templates(sessions: sessionmaker[Session], message_ids: list[int]) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Template.key)
                .join(Message, Message.template_id == Template.id)
                .where(Message.id.in_(message_ids))
                .order_by(Message.step_id)
            )
        )


def test_the_program_is_stored_flat_with_its_branches_in_place(sessions: sessionmaker[Session]) -> None:
    setup(sessions, purchase_spec())
    with sessions() as session:
        steps = session.scalars(select(AutomationStep).order_by(AutomationStep.position)).all()
    assert [(step.position, step.kind) for step in steps] == [
        (0, "update_contact"),
        (1, "condition"),
        (2, "send_email"),
        (3, "send_email"),
        (4, "send_email"),
    ]
    condition = steps[1].config
    assert (condition["then"], condition["else"], condition["next"]) == (2, 3, 4)
    # Both branches go on with the step after the condition; the last step ends the program.
    assert [step.config["next"] for step in steps[2:]] == [4, 4, None]
    with sessions.begin() as session:
        assert apply_spec(session, purchase_spec()) == []


@pytest.mark.parametrize(
    ("step", "complaint"),
    [
        ({"condition": {"if": "data.amount >", "then": []}}, r"steps\[1\]\.condition\.if: .*not a valid condition"),
        ({"condition": {"if": "amount > 1"}}, r"steps\[1\]\.condition\.if: .*reads 'amount'"),
        (
            {"condition": {"if": "data.x == 1", "then": [{"send_email": {"template": "nope"}}]}},
            r"steps\[1\]\.condition\.then\[0\]\.send_email\.template: no template 'nope'",
        ),
    ],
)
def test_a_step_that_cannot_run_is_refused_when_applied(
    sessions: sessionmaker[Session], step: dict[str, Any], complaint: str
) -> None:
    spec = purchase_spec(steps=[{"send_email": {"template": "thanks"}}, step])
    with sessions.begin() as session, pytest.raises(InvalidConfig, match=complaint):
        apply_spec(session, spec)


def test_a_step_is_exactly_one_kind() -> None:
    spec = purchase_spec(steps=[{"send_email": {"template": "thanks"}, "update_contact": {"set": {"a": 1}}}])
    with pytest.raises(
        ValueError, match="a step is exactly one of send_email, wait, condition, update_contact, webhook"
    ):
        ApplyFile.model_validate(spec)


def test_each_purchase_takes_the_branch_its_amount_chooses(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions, purchase_spec())
    big, small = new_id(), new_id()
    with sessions.begin() as session:
        planned = record_events(
            session,
            [
                (big, purchase(workspace_id, "ann@example.com", 150)),
                (small, purchase(workspace_id, "bob@example.com", 99.0)),
            ],
            now=NOW,
        )
    with sessions() as session:
        branches = select(Message.event_id, Template.key).join(Template, Message.template_id == Template.id)
        by_event = dict(session.execute(branches.where(Template.key != "receipt")).all())
        runs = {run.event_id: run for run in session.scalars(select(AutomationRun))}
        ann = session.scalars(select(Contact).where(Contact.email == "ann@example.com")).one()
    assert by_event == {big: "vip", small: "regular"}
    assert len(planned.ids) == 4  # a branch and the receipt for each
    assert [(step["kind"], step.get("branch")) for step in runs[big].trail] == [
        ("update_contact", None),
        ("condition", "then"),
        ("send_email", None),
        ("send_email", None),
    ]
    assert runs[small].trail[1]["branch"] == "else"
    assert {run.status for run in runs.values()} == {"completed"}
    # Rendered for the event; typed as the declared field is, left as text where no field is declared.
    assert ann.fields == {"plan": "Pro Plan - Annual", "last_amount": 150}


def test_a_condition_that_cannot_be_decided_fails_the_run_and_sends_nothing_after_it(
    sessions: sessionmaker[Session],
) -> None:
    steps = purchase_spec()["automations"][0]["steps"][1:]  # the condition, then the receipt
    workspace_id = setup(sessions, purchase_spec(steps=steps))
    event_id = new_id()
    with sessions.begin() as session:
        planned = record_event(session, event_id, purchase(workspace_id, "ann@example.com", None), now=NOW)
    with sessions() as session:
        run = session.scalars(select(AutomationRun)).one()
    assert planned.ids == []
    assert (run.status, run.position) == ("failed", 0)
    assert run.error == "step 0 (condition): condition 'data.amount > 100': data type mismatch"


def test_a_field_value_the_field_refuses_fails_the_run(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions, purchase_spec())
    with sessions.begin() as session:
        record_event(session, new_id(), purchase(workspace_id, "ann@example.com", "lots"), now=NOW)
    with sessions() as session:
        run = session.scalars(select(AutomationRun)).one()
        ann = session.scalars(select(Contact)).one()
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("step 0 (update_contact): field last_amount (number): ")
    assert ann.fields == {}


def test_an_audience_of_many_runs_the_program_for_each_contact(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions, purchase_spec())
    with sessions.begin() as session:
        for email, amount in (("ann@example.com", 150), ("bob@example.com", 20)):
            record_event(session, new_id(), purchase(workspace_id, email, amount), now=NOW)
        session.execute(delete(AutomationRun))
        session.execute(delete(Message))
    event_id = new_id()
    everyone = TriggerRequest(
        workspace_id=workspace_id,
        event="purchase_completed",
        audience=Audience(query={"last_amount": {"$gte": 0}}),
        contact_update=ContactUpdate(),
        data={"amount": 500, "items": ["Team"]},
    )
    with sessions.begin() as session:
        assert record_event(session, event_id, everyone, now=NOW).ids == []
    with sessions.begin() as session:
        planned, done = fan_out_chunk(session, event_id, now=NOW)
    with sessions.begin() as session:
        again, done_again = fan_out_chunk(session, event_id, now=NOW)
    assert (again.ids, done_again) == ([], True)
    assert done
    assert planned_templates(sessions, planned.ids) == ["vip", "vip", "receipt", "receipt"]
    with sessions() as session:
        assert len(session.scalars(select(AutomationRun).where(AutomationRun.event_id == event_id)).all()) == 2


def waiting_spec(wait: Any, status: str = "active") -> dict[str, Any]:
    steps = [{"send_email": {"template": "thanks"}}, {"wait": wait}, {"send_email": {"template": "receipt"}}]
    return purchase_spec(steps=steps, status=status)


def test_a_wait_holds_the_run_until_its_time_then_it_goes_on_once(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions, waiting_spec("2d"))
    with sessions.begin() as session:
        first = record_event(session, new_id(), purchase(workspace_id, "ann@example.com", 10), now=NOW).ids
    assert planned_templates(sessions, first) == ["thanks"]
    with sessions() as session:
        run = session.scalars(select(AutomationRun)).one()
        assert (run.status, run.position, run.wake_at) == ("waiting", 2, NOW + timedelta(days=2))
        assert due_runs(session, now=NOW + timedelta(days=2) - timedelta(seconds=1), limit=10).ids == []
    later = NOW + timedelta(days=2)
    with sessions.begin() as session:
        assert due_runs(session, now=later, limit=10).ids == [run.id]
        # Not yet: nothing moves; what it answers is the run's message still to send, the one before the wait.
        assert carry_on(session, run.id, now=later - timedelta(seconds=1)) == first
        second = carry_on(session, run.id, now=later)
    with sessions.begin() as session:
        # A second hand-over of the same run plans nothing new; its message is still the one to send.
        assert carry_on(session, run.id, now=later) == second
        run = session.get_one(AutomationRun, run.id)
        assert due_runs(session, now=later, limit=10).ids == []
    assert planned_templates(sessions, second) == ["thanks", "receipt"]
    assert (run.status, run.position) == ("completed", None)
    assert [step["kind"] for step in run.trail] == ["send_email", "wait", "send_email"]


def test_a_run_handed_out_lately_is_not_handed_out_again_until_that_is_stale(
    sessions: sessionmaker[Session],
) -> None:
    workspace_id = setup(sessions, waiting_spec("1m"))
    with sessions.begin() as session:
        record_event(session, new_id(), purchase(workspace_id, "ann@example.com", 10), now=NOW)
    due = NOW + timedelta(minutes=1)
    with sessions.begin() as session:
        [run_id] = due_runs(session, now=due, limit=10).ids
        mark_handed_out(session, [run_id], now=due)
    with sessions() as session:
        assert due_runs(session, now=due + HAND_OUT_AGAIN_AFTER - timedelta(seconds=1), limit=10).ids == []
        assert due_runs(session, now=due + HAND_OUT_AGAIN_AFTER + timedelta(seconds=1), limit=10).ids == [run_id]


def test_a_paused_automation_holds_its_waiting_runs_until_it_is_active_again(
    sessions: sessionmaker[Session],
) -> None:
    workspace_id = setup(sessions, waiting_spec("1h"))
    with sessions.begin() as session:
        record_event(session, new_id(), purchase(workspace_id, "ann@example.com", 10), now=NOW)
        run_id = session.scalars(select(AutomationRun.id)).one()
    setup(sessions, waiting_spec("1h", status="paused"))
    later = NOW + timedelta(hours=2)
    with sessions.begin() as session:
        assert due_runs(session, now=later, limit=10).ids == []
        carry_on(session, run_id, now=later)  # handed out just before the pause
        assert session.get_one(AutomationRun, run_id).status == "waiting"
    setup(sessions, waiting_spec("1h"))
    with sessions.begin() as session:
        assert due_runs(session, now=later, limit=10).ids == [run_id]
        resumed = carry_on(session, run_id, now=later)
    assert planned_templates(sessions, resumed) == ["thanks", "receipt"]
    with sessions() as session:
        assert session.get_one(AutomationRun, run_id).status == "completed"


@pytest.mark.parametrize(
    ("until", "wake_at"),
    [
        ("2026-03-05T09:30:00+00:00", datetime(2026, 3, 5, 9, 30, tzinfo=UTC)),
        ("2026-03-05T09:30:00", datetime(2026, 3, 5, 9, 30, tzinfo=UTC)),
        (1772703000, datetime(2026, 3, 5, 9, 30, tzinfo=UTC)),
    ],
)
def test_a_wait_until_a_time_in_the_data(sessions: sessionmaker[Session], until: Any, wake_at: datetime) -> None:
    workspace_id = setup(sessions, waiting_spec({"until": "data.delivery.at"}))
    trigger = purchase(workspace_id, "ann@example.com", 10)
    trigger = trigger.model_copy(update={"data": {**trigger.data, "delivery": {"at": until}}})
    with sessions.begin() as session:
        record_event(session, new_id(), trigger, now=NOW)
    with sessions() as session:
        run = session.scalars(select(AutomationRun)).one()
    assert (run.status, run.wake_at) == ("waiting", wake_at)


def test_a_wait_until_a_time_already_past_goes_straight_on_and_one_missing_fails(
    sessions: sessionmaker[Session],
) -> None:
    workspace_id = setup(sessions, waiting_spec({"until": "data.delivery_at"}))
    past = purchase(workspace_id, "ann@example.com", 10)
    past = past.model_copy(update={"data": {**past.data, "delivery_at": "2020-01-01T00:00:00Z"}})
    with sessions.begin() as session:
        planned = record_event(session, new_id(), past, now=NOW).ids
        record_event(session, new_id(), purchase(workspace_id, "bob@example.com", 10), now=NOW)
    with sessions() as session:
        runs = {run.status: run for run in session.scalars(select(AutomationRun))}
    assert planned_templates(sessions, planned) == ["thanks", "receipt"]
    assert runs["failed"].error == (
        "step 1 (wait): data.delivery_at is None, not a time (ISO 8601, or seconds since the epoch)"
    )

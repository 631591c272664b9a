"""The registry of step kinds: every kind goes from the apply file to a stored program to a run's step through it."""

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import apply_spec
from tripmail.automations.steps import KINDS, StepSpec
from tripmail.ids import new_id
from tripmail.ingest.recording import record_event
from tripmail.models import AutomationRun, AutomationStep, Template, Workspace
from tripmail.schemas.trigger import Audience, TriggerRequest

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# What the file gives for each kind, and the config stored for it (`next` is the position after it; a template is
# named by key and stored with its id too). Existing databases hold these configs: their shape must not change.
SAMPLES: dict[str, tuple[Any, dict[str, Any]]] = {
    "send_email": (
        {"template": "thanks", "transactional": True},
        {"template_id": "thanks", "template": "thanks", "next": 1, "transactional": True},
    ),
    "wait": ({"until": "data.at"}, {"until": "data.at", "next": 1}),
    "condition": (
        {"if": "data.amount > 100", "then": [{"send_email": {"template": "vip"}}]},
        {"if": "data.amount > 100", "then": 1, "else": 2, "next": 2},
    ),
    "update_contact": ({"set": {"plan": "{{ data.items[0] }}"}}, {"set": {"plan": "{{ data.items[0] }}"}, "next": 1}),
    "webhook": (
        {"url": "https://hooks.example.com/tripmail"},
        {"url": "https://hooks.example.com/tripmail", "secret": None, "next": 1},
    ),
}


def setup(sessions: sessionmaker[Session], steps: list[dict[str, Any]]) -> int:
    spec = {
        "workspace": "shop",
        "templates": [{"key": key, "subject": key, "text": key} for key in ("thanks", "vip")],
        "automations": [{"name": "Purchase", "trigger": "purchase_completed", "steps": steps}],
    }
    with sessions.begin() as session:
        apply_spec(session, spec)
        return session.scalars(select(Workspace.id).where(Workspace.key == "shop")).one()


def purchase(workspace_id: int) -> TriggerRequest:
    return TriggerRequest(
        workspace_id=workspace_id,
        event="purchase_completed",
        audience=Audience(email="ann@example.com"),
        data={"amount": 150, "items": ["Pro Plan - Annual"], "at": "2020-01-01T00:00:00Z"},
    )


def test_the_apply_file_offers_every_kind_in_the_registry_and_no_other() -> None:
    assert list(StepSpec.model_fields) == list(KINDS)
    assert {name: StepSpec.model_fields[name].annotation for name in KINDS} == {
        name: kind.model | None for name, kind in KINDS.items()
    }
    assert set(SAMPLES) == set(KINDS)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_is_applied_stored_and_carried_out(sessions: sessionmaker[Session], kind: str) -> None:
    given, stored = SAMPLES[kind]
    # A step after it makes the automation one with runs even when the sample is a send_email step.
    steps = [{kind: given}, {"update_contact": {"set": {"seen": "yes"}}}]
    workspace_id = setup(sessions, steps)
    with sessions.begin() as session:
        record_event(session, new_id(), purchase(workspace_id), now=NOW)
    with sessions() as session:
        first = session.scalars(select(AutomationStep).where(AutomationStep.position == 0)).one()
        templates = {t.key: t.id for t in session.scalars(select(Template))}
        run = session.scalars(select(AutomationRun)).one()
    if "template_id" in stored:
        stored = stored | {"template_id": templates[stored["template_id"]]}
    assert (first.kind, first.config) == (kind, stored)
    assert list(first.config) == list(stored)
    assert (run.status, run.error) == ("completed", None)
    assert run.trail[0]["kind"] == kind


def test_a_stored_kind_this_version_does_not_know_fails_the_run(sessions: sessionmaker[Session]) -> None:
    workspace_id = setup(sessions, [{"update_contact": {"set": {"seen": "yes"}}}, {"send_email": {"template": "vip"}}])
    with sessions.begin() as session:
        session.execute(update(AutomationStep).where(AutomationStep.position == 0).values(kind="wait_for_event"))
    with sessions.begin() as session:
        planned = record_event(session, new_id(), purchase(workspace_id), now=NOW)
    with sessions() as session:
        run = session.scalars(select(AutomationRun)).one()
    assert planned.ids == []
    assert (run.status, run.position) == ("failed", 0)
    assert run.error == "step 0 (wait_for_event): no step kind 'wait_for_event' in this version of Tripmail"
    assert run.trail == [
        {
            "position": 0,
            "kind": "wait_for_event",
            "failed": "no step kind 'wait_for_event' in this version of Tripmail",
        }
    ]

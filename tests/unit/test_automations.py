from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import make_automation, make_template, make_workspace, password_reset_spec
from tripmail.automations.program import automations_for, automations_on
from tripmail.models import Automation, AutomationStep, Template
from tripmail.schemas.trigger import Audience, TriggerRequest


def _spec_with_three_automations() -> dict[str, object]:
    spec = password_reset_spec("acme", name="Reset")
    spec["templates"] += [make_template("tips", "Tips", "Tips")]
    spec["automations"] += [
        {
            "name": "Reset and tips",
            "trigger": "forgot_password",
            "transactional": False,
            "steps": [{"send_email": {"template": "tips"}}, {"send_email": {"template": "reset"}}],
        },
        {
            "name": "Paused",
            "trigger": "FORGOT_PASSWORD",
            "status": "paused",
            "steps": [{"send_email": {"template": "tips"}}],
        },
        make_automation("Other event", "tips", trigger="SIGNED_UP"),
    ]
    return spec


def test_an_event_starts_its_active_automations_with_their_send_steps_in_order(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        workspace_id = make_workspace(session, _spec_with_three_automations())
    with sessions() as session:
        trigger = TriggerRequest(workspace_id=workspace_id, event="Forgot_Password", audience=Audience(email="a@b.io"))
        started = automations_for(session, trigger)
        ids = {row.name: row.id for row in session.execute(select(Automation.name, Automation.id))}
        templates = {row.key: row.id for row in session.execute(select(Template.key, Template.id))}
        steps = {
            (automation_id, position): id_
            for automation_id, position, id_ in session.execute(
                select(AutomationStep.automation_id, AutomationStep.position, AutomationStep.id)
            )
        }
        assert automations_on(session, workspace_id, "forgot_password") == started

    both = ids["Reset and tips"]
    assert [(automation.id, automation.transactional) for automation in started] == [
        (ids["Reset"], True),
        (both, False),
    ]
    assert [(step.id, step.template_id) for step in started[1].send_steps] == [
        (steps[(both, 0)], templates["tips"]),
        (steps[(both, 1)], templates["reset"]),
    ]


def test_a_trigger_naming_an_automation_starts_it_only_while_active(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        workspace_id = make_workspace(session, _spec_with_three_automations())
    with sessions() as session:
        ids = {row.name: row.id for row in session.execute(select(Automation.name, Automation.id))}

        def started_by(name: str, workspace: int = workspace_id) -> list[int]:
            trigger = TriggerRequest(workspace_id=workspace, automation_id=ids[name], audience=Audience(email="a@b.io"))
            return [automation.id for automation in automations_for(session, trigger)]

        assert started_by("Other event") == [ids["Other event"]]
        assert started_by("Paused") == []
        assert started_by("Other event", workspace=workspace_id + 1) == []

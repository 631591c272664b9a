import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import apply_spec, password_reset_spec, write_yaml
from tripmail.errors import InvalidConfig
from tripmail.ids import utcnow
from tripmail.models import Automation, AutomationStep, EventType, Template, Workspace
from tripmail.setup.apply import apply_file
from tripmail.setup.spec import ApplyFile, load_apply_file

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


def snapshot(session: Session) -> list[Any]:
    rows: list[Any] = []
    for model in (Workspace, EventType, Template, Automation, AutomationStep):
        for row in session.scalars(select(model)):
            rows.append({column.key: getattr(row, column.key) for column in model.__table__.columns})
    return rows


def test_applying_the_quickstart_twice_changes_nothing(sessions: sessionmaker[Session]) -> None:
    spec = load_apply_file(QUICKSTART)
    with sessions.begin() as session:
        first = apply_file(session, spec, now=utcnow())
    with sessions() as session:
        before = snapshot(session)
    with sessions.begin() as session:
        second = apply_file(session, spec, now=utcnow())
    with sessions() as session:
        after = snapshot(session)
    assert first[:3] == [
        "created workspace quickstart",
        "created event type FORGOT_PASSWORD",
        "created template password-reset",
    ]
    assert re.fullmatch(
        r"created automation Password reset \(id \d+; "
        r"altcraft v1.0 link /compat/altcraft/trg/[0-9a-f]{48}/<email\|md5\|xxh>\)",
        first[3],
    )
    assert second == []
    assert after == before


def test_changes_are_applied_and_reported(sessions: sessionmaker[Session]) -> None:
    spec = password_reset_spec("acme")
    with sessions.begin() as session:
        apply_spec(session, spec)
    spec["templates"][0]["subject"] = "New subject"
    spec["automations"][0]["status"] = "paused"
    spec["event_types"][0]["dedupe_window"] = "2h"
    with sessions.begin() as session:
        changes = apply_spec(session, spec)
    assert changes == [
        "updated event type FORGOT_PASSWORD: dedupe_window_s",
        "updated template reset: subject",
        "updated automation Password reset: status",
    ]
    with sessions() as session:
        assert session.scalars(select(Template.subject)).one() == "New subject"
        assert session.scalars(select(EventType.dedupe_window_s)).one() == 7200
        automation = session.scalars(select(Automation)).one()
        assert automation.status == "paused"
        assert [step.kind for step in automation.steps] == ["send_email"]


def test_fixed_automation_id_and_link_are_kept(sessions: sessionmaker[Session]) -> None:
    link = "465ea6fedf0a75fa9ee0b5fb8f9d5fe89af34054909af8bb"
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme", id=96, link=link))
    with sessions.begin() as session:
        assert apply_spec(session, password_reset_spec("acme", id=96, link=link)) == []
        assert session.scalars(select(Automation.id)).one() == 96
        assert session.scalars(select(Automation.link)).one() == link


def test_step_naming_a_missing_template_is_refused(sessions: sessionmaker[Session]) -> None:
    spec = password_reset_spec("acme", steps=[{"send_email": {"template": "nope"}}])
    with sessions.begin() as session, pytest.raises(InvalidConfig, match=r"steps\[0\].send_email.template: .*'nope'"):
        apply_spec(session, spec)


def test_template_syntax_error_names_template_and_line(sessions: sessionmaker[Session]) -> None:
    spec = password_reset_spec("acme")
    spec["templates"][0]["text"] = "line one\n{% if %}"
    with sessions.begin() as session, pytest.raises(InvalidConfig, match=r"templates\.reset\.text: line 2"):
        apply_spec(session, spec)


def test_file_errors_name_the_place_in_the_file(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        """
        workspace: acme
        event_types:
          - {key: A, dedupe_window: soon}
        automations:
          - name: x
            status: running
            steps: [{send_email: {template: t}}]
        """,
    )
    with pytest.raises(InvalidConfig) as error:
        load_apply_file(path)
    assert "event_types.0.dedupe_window" in error.value.detail
    assert "automations.0.status" in error.value.detail


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "workspace: [unclosed\n")
    with pytest.raises(InvalidConfig, match="not valid YAML"):
        load_apply_file(path)


def test_velocity_outside_the_subset_is_refused_at_apply(sessions: sessionmaker[Session]) -> None:
    spec = password_reset_spec("acme")
    spec["templates"][0] |= {"syntax": "velocity", "text": "Hi\n#macro(x)yes#end"}
    with sessions.begin() as session, pytest.raises(InvalidConfig, match=r"templates\.reset\.text: line 2: #macro"):
        apply_spec(session, spec)


@pytest.mark.parametrize("sender", ["Acme", "Acme <noreply@acme.example>\r\nBcc: x@evil.example"])
def test_sender_must_be_an_address_on_one_line(sender: str) -> None:
    with pytest.raises(ValidationError, match="from"):
        ApplyFile.model_validate({"workspace": "acme", "from": sender})


def test_automations_without_an_id_follow_ones_with_a_fixed_id(sessions: sessionmaker[Session]) -> None:
    spec = password_reset_spec("acme", id=96)
    with sessions.begin() as session:
        apply_spec(session, spec)
    spec["automations"].append(spec["automations"][0] | {"name": "Second", "id": None})
    with sessions.begin() as session:
        apply_spec(session, spec)
    with sessions() as session:
        assert sorted(session.scalars(select(Automation.id))) == [96, 97]

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.lookups import SetupCache
from tests.builders import apply_spec, password_reset_spec
from tripmail.models import Workspace


def test_set_up_is_read_again_once_its_time_is_up(sessions: sessionmaker[Session]) -> None:
    now = [100.0]
    cache = SetupCache(ttl_s=2.0, clock=lambda: now[0])
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme"))
        workspace_id = session.scalars(select(Workspace.id)).one()
    event_type, matching, transactional = cache.event(sessions, workspace_id, "forgot_password")
    assert (event_type is not None, matching, transactional) == (True, 1, True)
    assert cache.event(sessions, workspace_id, "SIGNED_UP") == (None, 0, False)

    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme", event="SIGNED_UP", name="Welcome", transactional=False))
    now[0] += 1.9
    assert cache.event(sessions, workspace_id, "signed_up") == (None, 0, False)  # still the answer read before
    now[0] += 0.2
    event_type, matching, transactional = cache.event(sessions, workspace_id, "signed_up")
    assert event_type is not None and event_type.key == "SIGNED_UP"
    assert (matching, transactional) == (1, False)


def test_an_event_is_transactional_when_a_send_step_of_its_marketing_automation_is(
    sessions: sessionmaker[Session],
) -> None:
    cache = SetupCache(ttl_s=2.0)
    obligatory = [{"send_email": {"template": "reset"}}, {"send_email": {"template": "reset", "transactional": True}}]
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme", transactional=False, steps=obligatory))
        workspace_id = session.scalars(select(Workspace.id)).one()
    assert cache.event(sessions, workspace_id, "FORGOT_PASSWORD").transactional

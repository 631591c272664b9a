from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.builders import apply_spec, password_reset_spec
from tripmail.contacts import upsert_contact
from tripmail.delivery import build_email
from tripmail.errors import NotFound
from tripmail.models import Contact, Workspace
from tripmail.rendering import RenderedEmail
from tripmail.schemas.trigger import Audience, ContactUpdate
from tripmail.unsubscribe import contact_of_token, unsubscribe, unsubscribe_token, unsubscribe_url

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def two_workspaces(sessions: sessionmaker[Session]) -> tuple[str, str]:
    """Ann in acme and Bob in other; their contact ids."""
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme"))
        apply_spec(session, password_reset_spec("other"))
        acme, other = (
            session.scalars(select(Workspace).where(Workspace.key == key)).one() for key in ("acme", "other")
        )
        ann = upsert_contact(session, acme.id, Audience(email="ann@example.com"), ContactUpdate(), now=NOW)
        bob = upsert_contact(session, other.id, Audience(email="bob@example.com"), ContactUpdate(), now=NOW)
        return ann.id, bob.id


def workspace(session: Session, key: str) -> Workspace:
    return session.scalars(select(Workspace).where(Workspace.key == key)).one()


def test_a_link_withdraws_email_consent_once(sessions: sessionmaker[Session]) -> None:
    ann_id, _ = two_workspaces(sessions)
    with sessions.begin() as session:
        token = unsubscribe_token(workspace(session, "acme"), ann_id)
        assert contact_of_token(session, token).email == "ann@example.com"
        unsubscribe(session, token, now=NOW)
    with sessions.begin() as session:
        unsubscribe(session, token, now=NOW.replace(hour=13))
    with sessions() as session:
        ann = session.get_one(Contact, ann_id)
    assert (ann.consents, ann.updated_at) == ({"email": False}, NOW)


def test_links_not_made_by_the_contacts_workspace_name_nobody(sessions: sessionmaker[Session]) -> None:
    ann_id, bob_id = two_workspaces(sessions)
    with sessions() as session:
        acme = workspace(session, "acme")
        genuine = unsubscribe_token(acme, ann_id)
        forged = [
            genuine[:-1] + ("0" if genuine[-1] != "0" else "1"),  # signature altered
            unsubscribe_token(acme, bob_id),  # Bob belongs to the other workspace
            f"{workspace(session, 'other').id}.{ann_id}.{genuine.rpartition('.')[2]}",  # moved to another workspace
            "not-a-token",
            "",
        ]
        for token in forged:
            with pytest.raises(NotFound, match="not valid"):
                contact_of_token(session, token)


def test_marketing_mail_carries_one_click_unsubscribe_headers() -> None:
    url = unsubscribe_url("https://mail.example/", "1.c-1.abc")
    content = build_email(
        sender="Acme <news@acme.test>",
        recipient="ann@example.com",
        rendered=RenderedEmail(subject="News", html=None, text="Hello"),
        message_id="<1@acme.test>",
        now=NOW,
        unsubscribe=url,
    )
    message = message_from_bytes(b"".join(content), policy=default)
    assert message["List-Unsubscribe"] == "<https://mail.example/unsubscribe/1.c-1.abc>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

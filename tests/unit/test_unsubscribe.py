import re
import uuid
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from types import SimpleNamespace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import apply_spec, password_reset_spec
from tests.support.unsubscribe_links import mangled
from tripmail.contacts.store import upsert_contact
from tripmail.contacts.unsubscribe import contact_of_token, token_parts, unsubscribe, unsubscribe_token, unsubscribe_url
from tripmail.delivery.mime import build_email
from tripmail.errors import NotFound
from tripmail.models import Contact, Workspace
from tripmail.rendering.templates import RenderedEmail
from tripmail.schemas.trigger import Audience, ContactUpdate

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


def test_oversized_or_malformed_parts_name_nobody(sessions: sessionmaker[Session]) -> None:
    ann_id, _ = two_workspaces(sessions)
    with sessions() as session:
        genuine = unsubscribe_token(workspace(session, "acme"), ann_id)
    outcomes = {}
    for what, token in mangled(genuine).items():
        # A session each: on PostgreSQL a statement that failed would fail the rest of its transaction.
        with sessions() as session:
            try:
                contact_of_token(session, token)
                outcomes[what] = "a contact"
            except NotFound:
                outcomes[what] = "NotFound"
            except Exception as exc:  # what would have been a 500
                outcomes[what] = type(exc).__name__
    assert outcomes == dict.fromkeys(mangled(genuine), "NotFound")


@given(st.text(max_size=200))
@example("1.0190a8c4-7f6e-7000-8000-000000000000.0123456789abcdef0123456789abcdef")
@example(f"{2**63}.c.0123456789abcdef0123456789abcdef")
def test_a_token_is_read_in_bounds_or_not_at_all(token: str) -> None:
    parts = token_parts(token)
    if parts is not None:
        workspace_id, contact_id, signature = parts
        assert 0 < workspace_id < 2**63
        assert contact_id.isascii() and 0 < len(contact_id) <= 36 and "\x00" not in contact_id
        assert re.fullmatch(r"[0-9a-f]{32}", signature)
        assert f"{workspace_id}.{contact_id}.{signature}" == token


@given(st.integers(min_value=1, max_value=2**63 - 1), st.uuids())
def test_every_link_made_is_read_back(workspace_id: int, contact_id: uuid.UUID) -> None:
    made = unsubscribe_token(SimpleNamespace(id=workspace_id, unsubscribe_secret="s"), str(contact_id))
    assert token_parts(made) == (workspace_id, str(contact_id), made.rpartition(".")[2])

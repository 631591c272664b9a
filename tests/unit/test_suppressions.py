from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import apply_spec, password_reset_spec
from tripmail.delivery.suppressions import (
    add_suppressions,
    list_suppressions,
    recent_suppressions,
    remove_suppression,
    remove_suppressions,
    suppress,
    suppressed_addresses,
)
from tripmail.errors import InvalidRequest, NotFound
from tripmail.models import Suppression, Workspace

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def workspaces(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Two workspaces, acme and other; their ids."""
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme"))
        apply_spec(session, password_reset_spec("other"))
        ids = dict(session.execute(select(Workspace.key, Workspace.id)).all())
    return ids["acme"], ids["other"]


def test_added_addresses_are_normalised_manual_and_an_existing_entry_stays(sessions: sessionmaker[Session]) -> None:
    acme, _ = workspaces(sessions)
    with sessions.begin() as session:
        suppress(session, acme, "bounced@example.com", "550 5.1.1 mailbox unavailable", now=NOW)
    with sessions.begin() as session:
        added = add_suppressions(
            session, acme, [" Ann@Example.COM ", "ann@example.com", "bounced@example.com"], reason="asked", now=NOW
        )

    assert [(entry.suppression.email, entry.created) for entry in added] == [
        ("ann@example.com", True),
        ("bounced@example.com", False),
    ]
    assert (added[0].suppression.source, added[0].suppression.reason) == ("manual", "asked")
    with sessions() as session:
        rows = {row.email: row for row in session.scalars(select(Suppression))}
    assert set(rows) == {"ann@example.com", "bounced@example.com"}
    assert (rows["bounced@example.com"].source, rows["bounced@example.com"].reason) == (
        "smtp",
        "550 5.1.1 mailbox unavailable",
    )


def test_an_invalid_address_is_named_and_nothing_is_added_or_removed(sessions: sessionmaker[Session]) -> None:
    acme, _ = workspaces(sessions)
    with sessions.begin() as session:
        add_suppressions(session, acme, ["kept@example.com"], reason="", now=NOW)

    refusing = pytest.raises(InvalidRequest, match="'not-an-address' is not a valid email address")
    with refusing as refused, sessions.begin() as session:
        add_suppressions(session, acme, ["new@example.com", "not-an-address"], reason="", now=NOW)
    assert refused.value.field == "email"
    with pytest.raises(InvalidRequest, match="'x@localhost'"), sessions.begin() as session:
        remove_suppressions(session, acme, ["kept@example.com", "x@localhost"])
    with sessions() as session:
        assert list(session.scalars(select(Suppression.email))) == ["kept@example.com"]


def test_the_list_is_the_workspaces_own_oldest_first_in_pages(sessions: sessionmaker[Session]) -> None:
    acme, other = workspaces(sessions)
    emails = [f"user{number}@example.com" for number in range(5)]
    with sessions.begin() as session:
        for number, email in enumerate(emails):
            add_suppressions(session, acme, [email], reason=f"r{number}", now=NOW + timedelta(minutes=number))
        add_suppressions(session, other, ["theirs@example.com"], reason="", now=NOW)

    with sessions() as session:
        first = list_suppressions(session, acme, limit=2)
        second = list_suppressions(session, acme, after=first.next_after, limit=2)
        last = list_suppressions(session, acme, after=second.next_after, limit=2)
        looked_up = list_suppressions(session, acme, email=" USER3@example.com")
        not_there = list_suppressions(session, acme, email="theirs@example.com")

    pages = [first, second, last]
    assert [[item.email for item in page.items] for page in pages] == [emails[0:2], emails[2:4], emails[4:]]
    assert last.next_after is None and first.next_after is not None
    assert first.items[1].created_at == NOW + timedelta(minutes=1) and first.items[1].reason == "r1"
    assert [(item.email, item.source) for item in looked_up.items] == [("user3@example.com", "manual")]
    assert not_there.items == [] and not_there.next_after is None


def test_recent_suppressions_are_newest_first_with_their_workspace(sessions: sessionmaker[Session]) -> None:
    acme, other = workspaces(sessions)
    with sessions.begin() as session:
        add_suppressions(session, acme, ["first@example.com"], reason="", now=NOW)
        add_suppressions(session, other, ["second@example.com"], reason="", now=NOW)
        add_suppressions(session, acme, ["third@example.com"], reason="", now=NOW)

    with sessions() as session:
        every = recent_suppressions(session)
        acmes = recent_suppressions(session, workspace_id=acme, limit=1)

    assert [(view.email, key) for view, key in every] == [
        ("third@example.com", "acme"),
        ("second@example.com", "other"),
        ("first@example.com", "acme"),
    ]
    assert [(view.email, key) for view, key in acmes] == [("third@example.com", "acme")]


def test_a_removed_address_is_no_longer_suppressed_in_its_workspace_only(sessions: sessionmaker[Session]) -> None:
    acme, other = workspaces(sessions)
    with sessions.begin() as session:
        add_suppressions(session, acme, ["ann@example.com", "bob@example.com"], reason="", now=NOW)
        add_suppressions(session, other, ["ann@example.com"], reason="", now=NOW)

    with sessions.begin() as session:
        removed = remove_suppressions(session, acme, ["ANN@example.com", "nobody@example.com"])
    assert removed == {"ann@example.com": True, "nobody@example.com": False}
    not_suppressed = pytest.raises(NotFound, match=r"ann@example\.com is not suppressed in this workspace")
    with not_suppressed, sessions.begin() as session:
        remove_suppression(session, acme, "ann@example.com")
    with sessions.begin() as session:
        remove_suppression(session, acme, "Bob@Example.com")

    with sessions() as session:
        addresses = {"ann@example.com", "bob@example.com"}
        assert suppressed_addresses(session, acme, addresses) == set()
        assert suppressed_addresses(session, other, addresses) == {"ann@example.com"}

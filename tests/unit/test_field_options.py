from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

import pytest
from pydantic import JsonValue, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import make_contact, make_workspace, password_reset_spec
from tripmail.contacts.field_options import FieldOption
from tripmail.contacts.fields import apply_field_options, check_overrides, message_field_values
from tripmail.delivery.claims import claim_messages
from tripmail.delivery.envelopes import prepare_envelopes
from tripmail.delivery.planning import recipient
from tripmail.errors import InvalidRequest
from tripmail.ids import new_id
from tripmail.ingest.recording import record_event
from tripmail.models import Contact
from tripmail.schemas.trigger import Audience, ChannelFilter, FieldOverride, TriggerRequest

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EARLIER = datetime(2025, 1, 1, tzinfo=UTC)


def contact(**fields: JsonValue) -> Contact:
    return Contact(id="c", workspace_id=1, email="ann@example.com", fields=fields, consents={}, updated_at=EARLIER)


@pytest.mark.parametrize(
    ("stored", "option", "shown", "kept"),
    [
        ("", 0, "Jason", "Jason"),
        (None, 0, "Jason", "Jason"),
        ("Ann", 0, "Ann", "Ann"),
        ("", 1, "Jason", ""),
        ("Ann", 1, "Jason", "Ann"),
        ("", 2, "Jason", "Jason"),
        ("Ann", 2, "Jason", "Jason"),
    ],
)
def test_options_0_1_2_for_empty_and_filled_fields(stored: str | None, option: int, shown: str, kept: str) -> None:
    person = contact(FirstName=stored)
    override = FieldOverride(name="FirstName", value="Jason", option=option)
    apply_field_options(person, [override], now=NOW)
    assert message_field_values(person.fields, [override]) == {"FirstName": shown}
    assert person.fields == {"FirstName": kept}
    assert person.updated_at == (NOW if kept != stored else EARLIER)


def test_unknown_names_are_dropped_and_values_typed_or_refused() -> None:
    types = {"Visits": "number", "FirstName": "string"}
    overrides = [
        FieldOverride(name="Visits", value="12", option=2),
        FieldOverride(name="Nope", value="x", option=2),
    ]
    assert check_overrides(types, overrides, "fields") == [FieldOverride(name="Visits", value=12, option=2)]
    with pytest.raises(InvalidRequest) as error:
        check_overrides(types, [FieldOverride(name="Visits", value="many", option=1)], "fields")
    assert error.value.field == "fields[0].value"


@pytest.mark.parametrize(
    ("channel_filter", "address"),
    [
        (None, "ann@example.com"),
        (ChannelFilter(email="ANN@example.com"), "ann@example.com"),
        (ChannelFilter(email="other@example.com"), None),
        (ChannelFilter(email="other@example.com", not_strict=True), "ann@example.com"),
        (ChannelFilter(phone="+79106135133"), None),
        (ChannelFilter(subscription_id="CAREFULWITHTHATAXE", provider="Chrome", not_strict=True), "ann@example.com"),
    ],
)
def test_subscription_filter_picks_or_skips_the_address(
    channel_filter: ChannelFilter | None, address: str | None
) -> None:
    assert recipient(contact(), channel_filter) == address


@pytest.mark.parametrize(
    ("stored", "option", "shown", "kept"),
    [
        ("", 0, "Jason", "Jason"),
        ("Ann", 0, "Ann", "Ann"),
        ("", 1, "Jason", ""),
        ("Ann", 1, "Jason", "Ann"),
        ("", 2, "Jason", "Jason"),
        ("Ann", 2, "Jason", "Jason"),
    ],
)
def test_the_rendered_email_and_the_stored_contact_for_each_option(
    sessions: sessionmaker[Session], stored: str, option: int, shown: str, kept: str
) -> None:
    spec = password_reset_spec("acme", id=None) | {"contact_fields": [{"name": "FirstName", "type": "string"}]}
    spec["templates"][0] |= {
        "subject": "Hi {{ contact.FirstName }}",
        "text": "{{ fields.FirstName }}/{{ contact.FirstName }}",
    }
    with sessions.begin() as session:
        workspace_id = make_workspace(session, spec)
        make_contact(session, workspace_id, "ann@example.com", now=NOW, contact_id="c1", fields={"FirstName": stored})
    trigger = TriggerRequest(
        workspace_id=workspace_id,
        event="FORGOT_PASSWORD",
        audience=Audience(email="ann@example.com"),
        fields=[FieldOverride(name="FirstName", value="Jason", option=option)],
        create_contact=False,
    )
    with sessions.begin() as session:
        message_ids = record_event(session, new_id(), trigger, now=NOW).ids
        claim_messages(session, message_ids, run_id="run-1", now=NOW)
    with sessions.begin() as session:
        [envelope] = prepare_envelopes(session, message_ids, now=NOW, public_url="https://mail.example").envelopes
        stored_after = session.get_one(Contact, "c1").fields
    email = message_from_bytes(b"".join(envelope.content), policy=default)
    body = email.get_body(("plain",))
    assert body is not None
    assert (email["Subject"], body.get_content().strip()) == (f"Hi {shown}", f"{shown}/{shown}")
    assert stored_after == {"FirstName": kept}


@pytest.mark.parametrize(
    ("option", "stores", "overwrites", "shows"),
    [
        # SPEC: 0 stores only into an empty field, 1 is for this message only, 2 always stores.
        (0, True, False, False),
        (1, False, False, True),
        (2, True, True, True),
    ],
)
def test_each_option_stores_and_shows_as_the_spec_says(
    option: int, stores: bool, overwrites: bool, shows: bool
) -> None:
    assert (FieldOption(option).stores, FieldOption(option).overwrites, FieldOption(option).shows) == (
        stores,
        overwrites,
        shows,
    )


def test_the_wire_takes_and_shows_the_options_as_0_1_2() -> None:
    assert [FieldOverride(name="a", value=1, option=option).option for option in (0, 1, 2)] == list(FieldOption)
    assert FieldOverride(name="a", value=1, option=2).model_dump(mode="json")["option"] == 2
    assert FieldOverride.model_json_schema()["properties"]["option"] == {
        "enum": [0, 1, 2],
        "title": "Option",
        "type": "integer",
    }
    with pytest.raises(ValidationError, match="Input should be 0, 1 or 2"):
        FieldOverride.model_validate({"name": "a", "value": 1, "option": "1"})

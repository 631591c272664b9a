import json

import pytest
from pydantic import ValidationError

from api.dialects import esputnik
from api.dialects.esputnik import EsputnikEvent, EsputnikEventV1
from tripmail.errors import InvalidRequest
from tripmail.models import ContactField
from tripmail.schemas.trigger import Audience

FIELDS = {10001: ContactField(name="birthday", type="date", number=10001)}


def event(*params: tuple[str, object], key_value: str | None = "k") -> EsputnikEvent:
    return EsputnikEvent.model_validate(
        {"eventTypeKey": "e", "keyValue": key_value, "params": [{"name": n, "value": v} for n, v in params]}
    )


def test_params_become_data_and_the_contact_comes_from_email_params() -> None:
    trigger = esputnik.to_trigger(event(("EmailAddress", "Ann@Example.com"), ("password", "1")), 1, FIELDS)
    assert trigger.audience.email == "ann@example.com"
    assert trigger.data == {"EmailAddress": "Ann@Example.com", "password": "1"}
    assert trigger.key == "k"


def test_key_value_that_is_an_email_addresses_the_contact_when_no_param_does() -> None:
    trigger = esputnik.to_trigger(event(key_value="site@example.com"), 1, FIELDS)
    assert trigger.audience.email == "site@example.com"


def test_profile_inputs_update_numbered_fields_and_a_faulty_array_is_ignored_whole() -> None:
    good = event(
        ("email", "a@example.com"), ("json", {"profileInputs": [{"profileInputId": 10001, "value": "2020-11-23"}]})
    )
    bad = event(
        ("email", "a@example.com"),
        (
            "json",
            {"profileInputs": [{"profileInputId": 10001, "value": "2020-11-23"}, {"profileInputId": 9, "value": 1}]},
        ),
    )
    assert esputnik.to_trigger(good, 1, FIELDS).contact_update.fields == {"birthday": "2020-11-23"}
    assert esputnik.to_trigger(bad, 1, FIELDS).contact_update.fields == {}


def test_contact_json_errors_are_listed_together() -> None:
    contact_json = {"lastname": "y" * 61, "sms": "12", "profileInputs": [{"profileInputId": 10001, "value": "x"}]}
    with pytest.raises(InvalidRequest) as error:
        esputnik.to_trigger(event(("contactJson", contact_json)), 1, FIELDS)
    assert [e["field"] for e in error.value.errors] == [
        "params.contactJson.lastname",
        "params.contactJson.sms",
        "params.contactJson.profileInputs[0].value",
    ]


def test_every_forbidden_character_is_refused() -> None:
    for character in esputnik.FORBIDDEN_CHARACTERS:
        with pytest.raises(ValidationError, match="eventTypeKey"):
            EsputnikEvent.model_validate({"eventTypeKey": f"a{character}b", "keyValue": "k"})
    assert EsputnikEvent.model_validate({"eventTypeKey": "abandoned cart-2 (v1)", "keyValue": "site@com.net"})


def test_a_key_value_that_is_not_a_valid_email_does_not_address_anyone() -> None:
    trigger = esputnik.to_trigger(event(("externalCustomerId", "AV1"), key_value="order@42"), 1, FIELDS)
    assert (trigger.audience.email, trigger.audience.external_id) == (None, "AV1")


def test_identifier_params_match_case_insensitively_including_email_address() -> None:
    assert EsputnikEvent.model_validate(
        {"eventTypeKey": "e", "params": [{"name": "EmailAddress", "value": "a@example.com"}]}
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("phone", {"a": 1}), ("phone", "12"), ("externalCustomerId", True), ("externalCustomerId", "x" * 301)],
)
def test_a_faulty_identifier_leaves_the_card_alone_and_the_event_still_goes(name: str, value: object) -> None:
    profile = ("json", {"profileInputs": [{"profileInputId": 10001, "value": "2020-11-23"}]})
    trigger = esputnik.to_trigger(event(("email", "Ann@Example.com"), (name, value), profile), 1, FIELDS)
    assert trigger.audience == Audience(email="ann@example.com")
    assert (trigger.contact_update.fields, trigger.create_contact) == ({}, True)


def test_without_a_fit_email_the_event_reaches_only_a_contact_that_exists() -> None:
    trigger = esputnik.to_trigger(event(("email", "not-an-email"), ("phone", "+380501234567")), 1, FIELDS)
    assert (trigger.audience, trigger.create_contact) == (Audience(phone="+380501234567"), False)


def test_local_phones_are_read_in_the_default_region_only_when_one_is_set() -> None:
    local = event(("email", "a@example.com"), ("phone", "050 123 45 67"))
    assert esputnik.to_trigger(local, 1, FIELDS, phone_region="UA").audience.phone == "+380501234567"
    assert esputnik.to_trigger(local, 1, FIELDS).audience.phone is None


def test_a_numeric_key_value_is_the_same_key_as_text() -> None:
    assert EsputnikEvent.model_validate({"eventTypeKey": "e", "keyValue": 1700000000}).key_value == "1700000000"
    with pytest.raises(ValidationError, match="keyValue"):
        EsputnikEvent.model_validate({"eventTypeKey": "e", "keyValue": True})


def test_v1_unescapes_nested_json_and_maps_to_the_same_trigger_as_v2() -> None:
    items = {"array": [{"name": "Hair styler"}]}
    profile = {"profileInputs": [{"profileInputId": 10001, "value": "2020-11-23"}]}
    params = [("email", "a@example.com"), ("items", items), ("json", profile), ("note", "[not json")]
    v2 = event(*params)
    v1 = EsputnikEventV1.model_validate(
        {
            "eventTypeKey": "e",
            "keyValue": "k",
            "params": [{"name": n, "value": json.dumps(v) if isinstance(v, dict) else v} for n, v in params],
        }
    )
    assert esputnik.to_trigger(v1, 1, FIELDS) == esputnik.to_trigger(v2, 1, FIELDS)


def test_a_known_contact_id_addresses_its_contact() -> None:
    trigger = esputnik.to_trigger(event(("contactId", "c-1")), 1, FIELDS, contact_id="c-1")
    assert trigger.audience == Audience(contact_id="c-1")
    assert esputnik.to_trigger(event(("contactId", 123456)), 1, FIELDS).audience == Audience()


def test_a_boolean_profile_input_id_names_no_field() -> None:
    bad = event(("email", "a@example.com"), ("json", {"profileInputs": [{"profileInputId": True, "value": "x"}]}))
    assert (
        esputnik.to_trigger(bad, 1, {1: ContactField(name="first", type="string", number=1)}).contact_update.fields
        == {}
    )

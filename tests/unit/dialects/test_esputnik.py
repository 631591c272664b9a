import pytest
from pydantic import ValidationError

from api.dialects import esputnik
from api.dialects.esputnik import EsputnikEvent
from tripmail.errors import InvalidRequest
from tripmail.models import ContactField

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
    ("name", "value"), [("phone", {"a": 1}), ("email", "not-an-email"), ("externalCustomerId", True)]
)
def test_unfit_identifiers_are_named_by_their_param(name: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as error:
        esputnik.to_trigger(event((name, value)), 1, FIELDS)
    assert error.value.field == f"params.{name}"


def test_a_boolean_profile_input_id_names_no_field() -> None:
    bad = event(("email", "a@example.com"), ("json", {"profileInputs": [{"profileInputId": True, "value": "x"}]}))
    assert (
        esputnik.to_trigger(bad, 1, {1: ContactField(name="first", type="string", number=1)}).contact_update.fields
        == {}
    )

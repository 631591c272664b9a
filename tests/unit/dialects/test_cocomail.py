import pytest
from pydantic import ValidationError

from api.dialects import cocomail
from api.dialects.cocomail import CocomailTrigger


def test_trigger_metadata_is_data_not_contact_fields() -> None:
    body = CocomailTrigger.model_validate(
        {
            "email": "ann@example.com",
            "identifier": "FORGOT_PASSWORD",
            "contactMetadata": {"plan": "pro"},
            "triggerMetadata": {"link": "https://x"},
        }
    )
    trigger = cocomail.to_trigger(body, workspace_id=1)
    assert (trigger.contact_update.fields, trigger.data) == ({"plan": "pro"}, {"link": "https://x"})
    assert trigger.audience.email == "ann@example.com"
    assert trigger.create_event_type is False


@pytest.mark.parametrize(("sent", "stored"), [("true", True), ("false", False), (False, False), (None, True)])
def test_consents_accept_booleans_and_the_seeds_strings(sent: object, stored: bool) -> None:
    raw: dict[str, object] = {"email": "ann@example.com", "identifier": "X"}
    if sent is not None:
        raw["consentsToEmails"] = sent
    trigger = cocomail.to_trigger(CocomailTrigger.model_validate(raw), workspace_id=1)
    assert trigger.contact_update.email_consent_if_created is stored
    assert trigger.contact_update.email_consent is None


def test_email_and_identifier_are_required() -> None:
    with pytest.raises(ValidationError) as error:
        CocomailTrigger.model_validate({"consentsToEmails": "maybe"})
    assert {e["loc"][0] for e in error.value.errors()} == {"email", "identifier", "consentsToEmails"}

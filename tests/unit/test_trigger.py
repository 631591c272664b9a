import pytest
from pydantic import ValidationError

from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest


def test_an_audience_checks_and_normalises_its_email_and_phone() -> None:
    audience = Audience(email="  Ann@Example.COM ", phone="00380501234567")
    assert (audience.email, audience.phone) == ("ann@example.com", "+380501234567")
    with pytest.raises(ValidationError) as refused:
        Audience(email="ann@@example.com")
    [error] = refused.value.errors()
    assert error["loc"] == ("email",)
    assert error["msg"].startswith("value is not a valid email address")
    with pytest.raises(ValidationError, match="not a phone number in international format"):
        Audience(phone="12")


def test_a_trigger_read_back_from_the_queue_is_the_trigger_that_was_accepted() -> None:
    accepted = TriggerRequest(
        workspace_id=1,
        event="ORDER_PAID",
        key="order-7",
        audience=Audience(email="Ann@Example.com", phone="+380501234567"),
        contact_update=ContactUpdate(fields={"first_name": "Ann"}),
        data={"total": 12.5, "items": [{"sku": "A1"}]},
    )
    assert TriggerRequest.read_back(accepted.model_dump(mode="json")) == accepted

import pytest

from api.native import NativeContact, to_audience
from tripmail.schemas.trigger import Audience


@pytest.mark.parametrize(
    "contact",
    [
        {"email": "Ann.Lee@Example.COM"},
        {"phone": "00380501234567", "external_id": "u-1"},
        {"email": "bob@example.com", "phone": "380501234567", "external_id": "u-2"},
    ],
)
def test_the_native_audience_is_the_one_audience_validation_builds(contact: dict[str, str]) -> None:
    assert to_audience(NativeContact.model_validate(contact)) == Audience.model_validate(contact)

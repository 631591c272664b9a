import pytest

from api.dialects.bunce import BuncePayload, payload_data
from tripmail.errors import InvalidRequest

PARAMS = {"date_purchased": "timestamp", "amount": "number"}


def test_declared_params_are_typed_and_undeclared_ones_kept() -> None:
    payload = BuncePayload.model_validate(
        {"email": "a@example.com", "date_purchased": "2012-09-03T14:30:00Z", "amount": "5", "note": "hi"}
    )
    assert payload_data(payload, PARAMS) == {"date_purchased": "2012-09-03T14:30:00Z", "amount": 5, "note": "hi"}


@pytest.mark.parametrize("stamp", ["2012-09-03T14:30:00+00:00", "2012-09-03 14:30:00Z", "2012-02-30T14:30:00Z", 5])
def test_timestamp_not_in_the_bunce_form_is_skipped(stamp: object) -> None:
    payload = BuncePayload.model_validate({"email": "a@example.com", "date_purchased": stamp, "amount": 1})
    assert payload_data(payload, PARAMS) == {"amount": 1}


def test_wrong_and_missing_params_are_named() -> None:
    payload = BuncePayload.model_validate({"email": "a@example.com", "amount": "many"})
    with pytest.raises(InvalidRequest) as error:
        payload_data(payload, PARAMS)
    assert [e["field"] for e in error.value.errors] == ["payload.amount", "payload.date_purchased"]

from datetime import UTC, datetime

import pytest
from pydantic import JsonValue

from tripmail.delivery import recipient
from tripmail.errors import InvalidRequest
from tripmail.fields import apply_field_options, check_overrides, message_field_values
from tripmail.models import Contact
from tripmail.schemas.trigger import ChannelFilter, FieldOverride

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

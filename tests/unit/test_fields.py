import pytest
from pydantic import JsonValue

from tripmail.contacts.fields import coerce_field_value


@pytest.mark.parametrize(
    ("field_type", "value", "stored"),
    [
        ("string", "Ann", "Ann"),
        ("string", 42, "42"),
        ("number", 42, 42),
        ("number", "42", 42),
        ("number", "4.5", 4.5),
        ("boolean", True, True),
        ("boolean", "false", False),
        ("date", "2020-11-23", "2020-11-23"),
        ("timestamp", "2024-03-11T13:45:00.000Z", "2024-03-11T13:45:00Z"),
        ("timestamp", "2024-03-11T15:45:00+02:00", "2024-03-11T13:45:00Z"),
        ("tags", "tag-1, tag-2", ["tag-1", "tag-2"]),
        ("tags", ["vip"], ["vip"]),
        ("number", None, None),
    ],
)
def test_values_that_fit_are_stored_in_canonical_form(field_type: str, value: JsonValue, stored: JsonValue) -> None:
    assert coerce_field_value(field_type, value) == stored


@pytest.mark.parametrize(
    ("field_type", "value", "message"),
    [
        ("string", {"a": 1}, "expected text"),
        ("number", "12abc", "expected a number"),
        ("number", True, "expected a number"),
        ("boolean", "yes", "expected true or false"),
        ("date", "23.11.2020", "YYYY-MM-DD"),
        ("date", "2020-13-45", "month must be in 1..12"),
        ("timestamp", "2024-03-11 13:45", "with a time zone"),
        ("tags", [1, 2], "expected tags"),
    ],
)
def test_values_that_do_not_fit_say_what_was_expected(field_type: str, value: JsonValue, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        coerce_field_value(field_type, value)

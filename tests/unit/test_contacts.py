import pytest

from tripmail.contacts.identity import normalize_email, normalize_phone


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("+380501234567", "+380501234567"),
        ("380501234567", "+380501234567"),
        ("0038 050 123 4567", "+380501234567"),
        ("+1-541-754-3010", "+15417543010"),
        (" +7 (910) 613-51-33 ", "+79106135133"),
    ],
)
def test_phones_are_stored_in_e164(written: str, stored: str) -> None:
    assert normalize_phone(written) == stored


@pytest.mark.parametrize("written", ["12", "+1 555", "call me", ""])
def test_invalid_phones_say_what_is_expected(written: str) -> None:
    with pytest.raises(ValueError, match=r"international format \(\+380501234567\)"):
        normalize_phone(written)


@pytest.mark.parametrize(
    ("written", "stored"),
    [("050 123 45 67", "+380501234567"), ("380501234567", "+380501234567"), ("+1-541-754-3010", "+15417543010")],
)
def test_with_a_default_region_local_numbers_are_read_as_its_own(written: str, stored: str) -> None:
    assert normalize_phone(written, "UA") == stored


def test_a_number_neither_local_nor_international_names_both_formats() -> None:
    with pytest.raises(ValueError, match=r"international format \(\+380501234567\) or a local number of UA"):
        normalize_phone("12", "UA")


def test_emails_are_trimmed_and_case_folded() -> None:
    assert normalize_email("  Ann@Example.COM ") == "ann@example.com"

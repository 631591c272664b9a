import pytest

from tripmail.automations.conditions import ConditionError, check_condition, evaluate
from tripmail.errors import InvalidConfig

PURCHASE = {"amount": 99.0, "currency": "USD", "items": ["Pro Plan - Annual"]}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("data.amount > 100", False),
        ("data.amount >= 99", True),
        ('data.currency == "USD" and data.amount < 100', True),
        ('not (data.currency == "EUR") or data.amount > 1000', True),
        ('"Pro Plan - Annual" in data.items', True),
        ('"Team" in data.items', False),
        ('data["amount"] == 99', True),
        ("data.coupon == null", True),
        ('contact.first_name == "Ann"', True),
        ('event.name == "purchase_completed"', True),
    ],
)
def test_conditions_read_data_contact_and_event(expression: str, expected: bool) -> None:
    check_condition(expression, name="steps[1].condition.if")
    contact = {"first_name": "Ann"}
    assert evaluate(expression, data=PURCHASE, contact=contact, event={"name": "purchase_completed"}) is expected


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("data.amount >", "is not a valid condition"),
        ("amount > 100", "reads 'amount'; a condition reads data, contact, event"),
        ("__import__('os').system('true')", "reads '__import__'"),
    ],
)
def test_a_condition_that_cannot_run_is_refused_when_applied(expression: str, complaint: str) -> None:
    with pytest.raises(InvalidConfig, match=r"steps\[1\]\.condition\.if") as refused:
        check_condition(expression, name="steps[1].condition.if")
    assert complaint in str(refused.value)


def test_a_condition_that_cannot_be_decided_is_an_error_not_a_branch() -> None:
    with pytest.raises(ConditionError, match=r"data\.amount > 100"):
        evaluate("data.amount > 100", data={}, contact={}, event={})

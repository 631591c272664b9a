import random
from collections.abc import Callable

import pytest
from pydantic import EmailStr, TypeAdapter, ValidationError

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


def email_outcome(validate: Callable[[object], object], value: object) -> object:
    """The address a validator answers, or the (type, message) of each error it raises."""
    try:
        return validate(value)
    except ValidationError as exc:
        return [(error["type"], error["msg"]) for error in exc.errors()]


def random_address(rng: random.Random) -> str:
    """Mostly plain-looking addresses, with the cases a plain-address shortcut must not take mixed in."""

    def word(alphabet: str, lengths: list[int]) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.choice(lengths)))

    local = rng.choice(["", "."]).join(
        word("abz09_+-" + rng.choice(["", "", "", "", "A", "!", "."]), [1, 3, 8, 8, 8, 70]) for _ in "ab"
    )
    labels = [
        word("abz09" + rng.choice(["", "", "-", "-", "B"]), [1, 2, 8, 8, 8, 8, 62, 63, 64])
        for _ in range(rng.randint(1, 4))
    ]
    tld = rng.choice(
        [
            "com",
            "com",
            "com",
            "io",
            "io",
            "c",
            "c0",
            "test",
            "local",
            "onion",
            "arpa",
            "invalid",
            "Com",
            "xn",
            "a-b",
            "1",
        ]
    )
    return f"{local}@{'.'.join([*labels, tld])}"


EDGE_ADDRESSES = [
    "ann@example.com",
    "ann@mail.test",
    "ann@test",
    "ann@in-addr.arpa",
    "ann@xn--bcher-kva.example",
    "ann@ab--cd.example.com",
    "ann@a-b.example.com",
    "ann@-ab.example.com",
    "postmaster@example.com",
    "a..b@example.com",
    ".a@example.com",
    "Ann@Example.COM",
    " ann@example.com ",
    "Ann <ann@example.com>",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "a@" + ".".join(["b" * 61] * 4) + ".com",
    "a" * 242 + "@example.com",
    "a" * 243 + "@example.com",
    "ann@example.c0m",
    "ann@123.com",
    "ann@example.123",
    "",
    5,
    None,
]


@pytest.mark.parametrize("address", EDGE_ADDRESSES)
def test_a_contact_email_is_what_email_str_makes_of_it(address: object) -> None:
    email = TypeAdapter(EmailStr | None)
    assert email_outcome(lambda v: NativeContact(email=v, external_id="x").email, address) == email_outcome(
        email.validate_python, address
    )


def test_random_contact_emails_are_what_email_str_makes_of_them() -> None:
    rng = random.Random(20260101)
    email = TypeAdapter(EmailStr)
    addresses = [random_address(rng) for _ in range(3000)]
    kept = [address for address in addresses if email_outcome(email.validate_python, address) == address]
    assert len(kept) > 400, "too few addresses for the shortcut to take"
    for address in addresses:
        assert email_outcome(lambda v: NativeContact(email=v).email, address) == email_outcome(
            email.validate_python, address
        ), address

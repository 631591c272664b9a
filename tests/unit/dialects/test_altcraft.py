import base64

import pytest

from api.dialects.altcraft import AltcraftStart, link_audience, start_audience
from tripmail.errors import InvalidRequest
from tripmail.rendering.attachments import parse_attachments


def start(**body: object) -> AltcraftStart:
    return AltcraftStart.model_validate({"token": "t", "id": "84"} | body)


def test_id_may_be_a_string_or_a_number() -> None:
    assert start().id == 84
    assert start(id=96).id == 96


@pytest.mark.parametrize(
    ("body", "audience"),
    [
        ({"email": "A@Example.com"}, {"email": "a@example.com"}),
        ({"matching": "phone", "phone": "+79000000000"}, {"phone": "+79000000000"}),
        (
            {"matching": "profile_id", "profile_id": "6606e08f10bcdd88297057a7"},
            {"contact_id": "6606e08f10bcdd88297057a7"},
        ),
        (
            {"matching": "custom", "field_name": "CRM_ID", "field_value": 123420},
            {"custom_field": {"name": "CRM_ID", "value": 123420}},
        ),
        ({"custom_request": {"email": {"$in": ["a@example.com"]}}}, {"query": {"email": {"$in": ["a@example.com"]}}}),
    ],
)
def test_matching_modes_become_audiences(body: dict[str, object], audience: dict[str, object]) -> None:
    assert start_audience(start(**body)).model_dump(exclude_none=True) == audience


def test_a_matching_mode_without_its_identifier_is_named() -> None:
    with pytest.raises(InvalidRequest, match='"matching": "email" needs email'):
        start_audience(start())


@pytest.mark.parametrize(
    ("value", "audience"),
    [
        ("User@Example.com", {"email": "user@example.com"}),
        ("B58996C504C5638798EB6B511E6F49AF", {"email_md5": "b58996c504c5638798eb6b511e6f49af"}),
        ("dd78094ad0e36ca3", {"email_xxh": "dd78094ad0e36ca3"}),
    ],
)
def test_link_values_are_email_md5_or_xxhash(value: str, audience: dict[str, str]) -> None:
    assert link_audience(value).model_dump(exclude_none=True) == audience


@pytest.mark.parametrize("value", ["not-a-hash", "abc", "user@"])
def test_other_link_values_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequest):
        link_audience(value)


def test_the_attachment_that_takes_the_total_over_the_limit_is_named() -> None:
    # Through the api a body this large is over altcraft's own limit unless TRIPMAIL_ALTCRAFT_MAX_BODY_BYTES is raised.
    files = [("a.bin", "data:;base64," + base64.b64encode(bytes(90)).decode())] * 2
    with pytest.raises(InvalidRequest) as refused:
        parse_attachments(files, max_total_bytes=100, where="attach")
    assert refused.value.errors == [
        {"field": "attach[1].data", "message": "attachments reach 180 bytes here; the limit is 100 in all"}
    ]

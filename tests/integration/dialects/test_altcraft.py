"""altcraft (seed 001) against the real stack: the seed's v1.1 and v1.0 examples, then every rule.

Campaign ids (84, 96) and profile ids are keys across the installation, so one workspace holds them for
the whole session; each test tells its mail apart by recipient and waits for the mail it caused.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import (
    Tenant,
    make_automation,
    make_contact,
    make_template,
    make_token,
    make_workspace,
    unique_workspace_key,
    workspace_spec,
)
from tests.support.polling import wait_until
from tests.support.smtp_sink import ReceivedMail, Sink
from tripmail.config import Settings
from tripmail.contacts.audience import MAX_CONDITIONS
from tripmail.contacts.identity import email_md5, email_xxh
from tripmail.models import Contact

LINK = "465ea6fedf0a75fa9ee0b5fb8f9d5fe89af34054909af8bb"
EXAMPLE_SINGLE = """{
"token": "abcdefghijklmnqrstuvwxyz",
"id": 84,
"matching": "profile_id",
"profile_id": "abcdefghijklmnqrstuvwxyz"
}"""
EXAMPLE_CUSTOM_REQUEST = """{
"token": "abcdefghijklmnqrstuvwxyz",
"id": 84,
"custom_request":{"Custom_ID": {"$in": ["IpHicQquekzYkufl", "xzFKLXeaJkCYHuMb", "SRNOwHVZiWFItJhr"]}}
}"""
EXAMPLE_CONTENT_ATTACH = """{
"token": "abcdefghijklmnqrstuvwxyz",
"id": 96,
"matching": "profile_id",
"profile_id": "6606e08f10bcdd88297057a7",
"attach": [
{
"data": "data:text/csv;base64,5LuK5pel44GvCg==",
"name": "日本.txt"
},
{
"data": "data:text/csv;base64,SEVMTE8K",
"name": "US.txt"
}
],
"content": {
"data_lines": [
"Channel A",
"Channel B"
],
"email_title": "New videos on your favorite channels"
}
}"""
EXAMPLE_V10_FIELDS = """{
"token": "abcdefghijklmnqrstuvwxyz",
"id": 96,
"matching": "profile_id",
"profile_id": "6606e08f10bcdd88297057a7",
"fields": [
{
"name": "FirstName",
"value": "Jason",
"option": 0
},
{
"name": "Order",
"value": "123abc456-78",
"option": 1
}
]
}"""


@dataclass(frozen=True)
class Altcraft:
    tenant: Tenant
    workspace_id: int
    db: sessionmaker[Session]

    def add_contact(self, contact_id: str | None = None, **fields: Any) -> Contact:
        email = fields.pop("email", None) or f"{unique_workspace_key('p')}@example.com"
        with self.db.begin() as session:
            return make_contact(
                session,
                self.workspace_id,
                email,
                now=datetime.now(UTC),
                contact_id=contact_id,
                phone=fields.pop("phone", None),
                fields=fields,
            )

    def stored_fields(self, contact_id: str) -> dict[str, Any]:
        with self.db() as session:
            return session.get_one(Contact, contact_id).fields


@pytest.fixture(scope="session")
def altcraft(db: sessionmaker[Session]) -> Altcraft:
    spec = workspace_spec(
        "altcraft",
        sender="Videos",
        contact_fields=[
            {"name": "Custom_ID", "type": "string"},
            {"name": "FirstName", "type": "string"},
            {"name": "Order", "type": "string"},
            {"name": "Visits", "type": "number"},
            {"name": "tags", "type": "tags"},
        ],
        templates=[
            make_template("plain", "Campaign 84", "Hello {{ contact.email }}"),
            {
                "key": "videos",
                "syntax": "apicontent",
                "subject": "{apicontent.email_title}",
                "text": "{apicontent.email_title}\n{apicontent.data_lines}\n"
                "Hi {{ contact.FirstName }}, order {{ contact.Order }}",
                "html": "<h1>{apicontent.email_title}</h1><p>{apicontent.data_lines}</p>",
            },
        ],
        automations=[
            make_automation("Campaign 84", "plain", id=84),
            make_automation("Campaign 96", "videos", id=96, link=LINK),
            make_automation("Paused", "plain", id=97, status="paused"),
        ],
    )
    key = spec["workspace"]
    with db.begin() as session:
        workspace_id = make_workspace(session, spec)
        token = make_token(session, key)
    return Altcraft(Tenant(key, token), workspace_id, db)


@pytest.fixture(scope="session")
def seed_profiles(altcraft: Altcraft) -> dict[str, Contact]:
    """The profiles the seed's examples name."""
    return {
        "abcdefghijklmnqrstuvwxyz": altcraft.add_contact("abcdefghijklmnqrstuvwxyz"),
        "6606e08f10bcdd88297057a7": altcraft.add_contact("6606e08f10bcdd88297057a7", FirstName="", Order="old"),
        "IpHicQquekzYkufl": altcraft.add_contact(Custom_ID="IpHicQquekzYkufl"),
        "xzFKLXeaJkCYHuMb": altcraft.add_contact(Custom_ID="xzFKLXeaJkCYHuMb"),
    }


def start(api_url: str, body: str | dict[str, Any], token: str) -> httpx.Response:
    url = f"{api_url}/compat/altcraft/api/v1.1/campaigns/triggers/start/"
    if isinstance(body, str):
        content = body.replace("abcdefghijklmnqrstuvwxyz", token, 1).encode()
        return httpx.post(url, content=content, headers={"Content-Type": "application/json"}, timeout=10)
    return httpx.post(url, json={"token": token} | body, timeout=10)


def one_more(sink: Sink, address: str, sender: str, before: int) -> Callable[[], ReceivedMail | None]:
    def check() -> ReceivedMail | None:
        mails = sink.to(address, sender=sender)
        return mails[before] if len(mails) > before else None

    return check


def test_v11_single_profile_example(
    api_url: str, altcraft: Altcraft, seed_profiles: dict[str, Contact], sink: Sink
) -> None:
    address = seed_profiles["abcdefghijklmnqrstuvwxyz"].email
    assert address is not None
    before = len(sink.to(address))
    response = start(api_url, EXAMPLE_SINGLE, altcraft.tenant.token)
    assert response.status_code == 200, response.text
    assert response.json() == {"data": None, "error": 0, "error_text": "Successful operation"}
    mail = wait_until(one_more(sink, address, altcraft.tenant.sender, before), what="campaign 84 mail")
    assert mail.message["Subject"] == "Campaign 84"


def test_v11_custom_request_example_reaches_every_match(
    api_url: str, altcraft: Altcraft, seed_profiles: dict[str, Contact], sink: Sink
) -> None:
    matched = [seed_profiles[key].email for key in ("IpHicQquekzYkufl", "xzFKLXeaJkCYHuMb")]
    before = {address: len(sink.to(str(address))) for address in matched}
    response = start(api_url, EXAMPLE_CUSTOM_REQUEST, altcraft.tenant.token)
    assert response.json()["error"] == 0, response.text
    for address in matched:
        wait_until(one_more(sink, str(address), altcraft.tenant.sender, before[address]), what=f"mail to {address}")


def test_v11_content_and_attachments_example(
    api_url: str, altcraft: Altcraft, seed_profiles: dict[str, Contact], sink: Sink
) -> None:
    address = str(seed_profiles["6606e08f10bcdd88297057a7"].email)
    before = len(sink.to(address))
    response = start(api_url, EXAMPLE_CONTENT_ATTACH, altcraft.tenant.token)
    assert response.json()["error"] == 0, response.text
    message = wait_until(one_more(sink, address, altcraft.tenant.sender, before), what="campaign 96 mail").message

    assert message["Subject"] == "New videos on your favorite channels"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert text.get_content().splitlines()[:3] == ["New videos on your favorite channels", "Channel A", "Channel B"]
    assert html.get_content().strip() == "<h1>New videos on your favorite channels</h1><p>Channel A<br>Channel B</p>"
    files = {part.get_filename(): part.get_payload(decode=True) for part in message.iter_attachments()}
    assert files == {"日本.txt": "今日は\n".encode(), "US.txt": b"HELLO\n"}


def test_v11_matching_modes(api_url: str, altcraft: Altcraft, sink: Sink) -> None:
    by_email = altcraft.add_contact()
    by_phone = altcraft.add_contact(phone="+79000000000")
    tagged = altcraft.add_contact(tags=["tag-1", "tag-2"])
    half_tagged = altcraft.add_contact(tags=["tag-1"])
    counted = altcraft.add_contact(Visits=123420)
    bodies: list[tuple[dict[str, Any], Contact]] = [
        ({"id": "84", "email": by_email.email}, by_email),
        ({"id": 84, "matching": "phone", "phone": "+79000000000"}, by_phone),
        ({"id": 84, "matching": "custom", "field_name": "tags", "field_value": "tag-1, tag-2"}, tagged),
        ({"id": 84, "matching": "custom", "field_name": "Visits", "field_value": "123420"}, counted),
    ]
    for body, contact in bodies:
        assert start(api_url, body, altcraft.tenant.token).json()["error"] == 0
        wait_until(one_more(sink, str(contact.email), altcraft.tenant.sender, 0), what=f"mail for {body}")
    assert sink.to(str(half_tagged.email)) == []


def test_v11_subscription_filter_strict_and_not(api_url: str, altcraft: Altcraft, sink: Sink) -> None:
    strict, lenient, named = altcraft.add_contact(), altcraft.add_contact(), altcraft.add_contact()
    for contact, subscription in (
        (strict, {"phone": "+79106135133", "not_strict": False}),
        (lenient, {"email": "example@example.com", "not_strict": True}),
        (named, {"email": str(named.email).upper(), "not_strict": False}),
    ):
        body = {"id": 84, "email": contact.email, "subscription_filter": subscription}
        assert start(api_url, body, altcraft.tenant.token).json()["error"] == 0
    wait_until(lambda: sink.to(str(lenient.email)), what="the not_strict mail")
    wait_until(lambda: sink.to(str(named.email)), what="the named-subscription mail")
    probe = altcraft.add_contact()
    start(api_url, {"id": 84, "email": probe.email}, altcraft.tenant.token)
    wait_until(lambda: sink.to(str(probe.email)), what="a later mail, so the strict one had its chance")
    assert sink.to(str(strict.email)) == []


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"id": 5511, "email": "a@example.com"}, 404, "trigger campaign 5511 not found"),
        ({"id": 97, "email": "a@example.com"}, 409, "trigger campaign 97 is paused"),
        ({"id": 84, "email": "nobody@example.com"}, 404, "no profile matches"),
        ({"id": 84, "matching": "phone"}, 400, '"matching": "phone" needs phone'),
        ({"id": 84, "matching": "custom", "field_name": "tags"}, 400, "needs field_name and field_value"),
        ({"id": 84, "custom_request": {"Custom_ID": {"$regex": "x"}}}, 400, "unknown operator $regex on Custom_ID"),
        ({"id": 84, "custom_request": {"Visits": {"$gt": [1]}}}, 400, "custom_request.Visits.$gt"),
        ({"id": "eighty-four", "email": "a@example.com"}, 400, "id"),
        (
            {"id": 84, "custom_request": {}, "attach": [{"name": "x", "data": "data:text/plain;base64,@@"}]},
            400,
            "attach[0].data",
        ),
        ({"id": 84, "custom_request": {}, "attach": [{"name": "x", "data": "hello"}]}, 400, "data:<mime>;base64"),
    ],
)
def test_v11_failures_carry_a_non_zero_error_and_clear_text(
    api_url: str, altcraft: Altcraft, body: dict[str, Any], status: int, text: str
) -> None:
    response = start(api_url, body, altcraft.tenant.token)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["data"] is None
    assert answer["error"] != 0
    assert text in answer["error_text"]


def test_v11_an_audience_past_its_budget_is_refused_naming_where(
    api_url: str, stack_settings: Settings, altcraft: Altcraft
) -> None:
    # A 250,001-item $in was answered 200, then failed in the database on every try of its task.
    budget = stack_settings.query_max_terms
    over = start(api_url, {"id": 84, "custom_request": {"Visits": {"$in": [0] * budget}}}, altcraft.tenant.token)
    tags = ", ".join(f"tag-{n}" for n in range(MAX_CONDITIONS))  # a condition each
    too_many_tags = {"id": 84, "matching": "custom", "field_name": "tags", "field_value": tags}
    tagged = start(api_url, too_many_tags, altcraft.tenant.token)

    assert (over.status_code, tagged.status_code) == (400, 400), (over.text, tagged.text)
    assert over.json() == {
        "data": None,
        "error": 400,
        "error_text": f"custom_request.Visits.$in: a query holds at most {budget} conditions and list items in all; "
        f"with the {budget} here it holds {budget + 2}",
    }
    assert tagged.json()["error_text"].startswith(f"field_value: a query holds at most {MAX_CONDITIONS} conditions")


def test_v11_bad_token_and_other_workspace(api_url: str, altcraft: Altcraft, tenant: Tenant) -> None:
    response = start(api_url, EXAMPLE_SINGLE, "tm_live_wrong")
    assert response.status_code == 401
    assert response.json()["error"] == 401
    foreign = start(api_url, {"id": 84, "email": "a@example.com"}, tenant.token)
    assert foreign.status_code == 404
    assert "trigger campaign 84 not found" in foreign.json()["error_text"]


def test_v10_get_by_email_md5_and_xxhash(api_url: str, altcraft: Altcraft, sink: Sink) -> None:
    contact = altcraft.add_contact(FirstName="Ann", Order="A-1")
    email = str(contact.email)
    for value in (email, email_md5(email), email_xxh(email)):
        before = len(sink.to(email))
        response = httpx.get(f"{api_url}/compat/altcraft/trg/{LINK}/{value}", timeout=10)
        assert response.json() == {"data": None, "error": 0, "error_text": "Successful operation"}
        wait_until(one_more(sink, email, altcraft.tenant.sender, before), what=f"mail by {value}")


def test_v10_post_fields_example_applies_options_0_and_1(api_url: str, altcraft: Altcraft, sink: Sink) -> None:
    empty = altcraft.add_contact(FirstName="", Order="old")
    named = altcraft.add_contact(FirstName="Ann", Order="old")
    for contact in (empty, named):
        response = httpx.post(
            f"{api_url}/compat/altcraft/trg/{LINK}/{email_xxh(str(contact.email))}",
            content=EXAMPLE_V10_FIELDS.encode(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert response.json()["error"] == 0, response.text

    def greeting(contact: Contact) -> str:
        [mail] = wait_until(lambda: sink.to(str(contact.email)), what="the mail")
        text = mail.message.get_body(("plain",))
        assert text is not None
        return str(text.get_content().splitlines()[-1])

    assert greeting(empty) == "Hi Jason, order 123abc456-78"
    assert greeting(named) == "Hi Ann, order 123abc456-78"
    assert altcraft.stored_fields(empty.id) == {"FirstName": "Jason", "Order": "old"}
    assert altcraft.stored_fields(named.id) == {"FirstName": "Ann", "Order": "old"}


def test_v10_option_2_overwrites_and_unknown_fields_are_ignored(api_url: str, altcraft: Altcraft, sink: Sink) -> None:
    contact = altcraft.add_contact(FirstName="Ann", Order="old")
    fields = [
        {"name": "Order", "value": "new", "option": 2},
        {"name": "FirstName", "value": "Bo", "option": 2},
        {"name": "Unknown", "value": 1, "option": 2},
    ]
    response = httpx.post(f"{api_url}/compat/altcraft/trg/{LINK}/{contact.email}", json={"fields": fields}, timeout=10)
    assert response.json()["error"] == 0, response.text
    [mail] = wait_until(lambda: sink.to(str(contact.email)), what="the mail")
    text = mail.message.get_body(("plain",))
    assert text is not None
    assert text.get_content().splitlines()[-1] == "Hi Bo, order new"
    assert altcraft.stored_fields(contact.id) == {"FirstName": "Bo", "Order": "new"}


def test_v10_errors(api_url: str, altcraft: Altcraft) -> None:
    contact = altcraft.add_contact()
    cases = [
        (f"/trg/{'0' * 48}/{contact.email}", None, 404, "no trigger campaign has this link"),
        (f"/trg/{LINK}/not-a-hash", None, 400, "md5 of an email"),
        (f"/trg/{LINK}/nobody@example.com", None, 404, "no profile matches"),
        (
            f"/trg/{LINK}/{contact.email}",
            {"fields": [{"name": "Visits", "value": "many", "option": 1}]},
            400,
            "fields[0].value",
        ),
        (f"/trg/{LINK}/{contact.email}", {"fields": [{"name": "Visits", "value": 1, "option": 3}]}, 400, "option"),
    ]
    for path, body, status, text in cases:
        url = f"{api_url}/compat/altcraft{path}"
        response = httpx.post(url, json=body, timeout=10) if body else httpx.get(url, timeout=10)
        assert response.status_code == status, (path, response.text)
        assert response.json()["error"] == status
        assert text in response.json()["error_text"]


def test_v11_bearer_token_path_without_slash_and_string_option(api_url: str, altcraft: Altcraft, sink: Sink) -> None:
    contact = altcraft.add_contact(FirstName="Ann", Order="old")
    body = {
        "id": 96,
        "matching": "email",
        "email": contact.email,
        "fields": [{"name": "Order", "value": "new", "option": "2"}],
    }
    response = httpx.post(
        f"{api_url}/compat/altcraft/api/v1.1/campaigns/triggers/start",
        json=body,
        headers={"Authorization": f"Bearer {altcraft.tenant.token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text  # served, not redirected
    assert response.json() == {"data": None, "error": 0, "error_text": "Successful operation"}
    [mail] = wait_until(lambda: sink.to(str(contact.email)), what="the mail")
    text = mail.message.get_body(("plain",))
    assert text is not None
    assert text.get_content().splitlines()[-1] == "Hi Ann, order new"
    assert altcraft.stored_fields(contact.id) == {"FirstName": "Ann", "Order": "new"}


def test_v11_a_bearer_token_is_checked_before_the_body_and_lifts_the_small_limit(
    api_url: str, altcraft: Altcraft
) -> None:
    """A header token is known before the body is read, so the api's own limit applies, not the one for bodies
    whose sender is not known yet."""
    contact = altcraft.add_contact()
    over = Settings(_env_file=None).altcraft_max_body_bytes + 1024
    body = {"id": 84, "email": contact.email, "content": {"pad": "x" * over}}
    url = f"{api_url}/compat/altcraft/api/v1.1/campaigns/triggers/start/"
    in_header = httpx.post(url, json=body, headers={"Authorization": f"Bearer {altcraft.tenant.token}"}, timeout=30)
    assert in_header.status_code == 200, in_header.text
    in_body = httpx.post(url, json={"token": altcraft.tenant.token} | body, timeout=30)
    assert in_body.status_code == 413
    assert in_body.json()["error"] == 413
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer tm_live_wrong"}, timeout=30)
    assert wrong.status_code == 401
    assert wrong.json() == {"data": None, "error": 401, "error_text": "the token is not valid (unknown or revoked)"}
    missing = httpx.post(url, json={"id": 84, "email": contact.email}, timeout=10)
    assert missing.status_code == 401
    assert "Authorization: Bearer" in missing.json()["error_text"]

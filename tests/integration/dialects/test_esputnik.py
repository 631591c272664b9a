"""esputnik (seed 002) against the real stack: the seed's example requests sent literally, then every rule."""

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_automation, make_template, make_tenant, workspace_spec
from tests.support.esputnik_requests import basic, post
from tests.support.polling import wait_until
from tests.support.smtp_sink import ReceivedMail, Sink
from tripmail.models import Contact, Event, EventType, Workspace

# Contacts and events are stored by a worker: each test has the stack's workers running, whatever ran before it.
pytestmark = pytest.mark.usefixtures("workers")

ABANDONED_CART = """{
    "eventTypeKey": "abandoned_cart",
    "keyValue": "site@com.net",
    "params":
    [
        {
            "name": "email",
            "value": "site@ukr.net"
        },
        {
            "name": "items",
            "value":
            {
                "array":
                [
                    {
                        "name": "Hair styler",
                        "price": "341",
                        "url": "https://site.com/catalog/suhaya-detskaya-molochnaya-smes-hipp-combiotic-2-750-g",
                        "imageurl": "https://site.com/uploads/product/big/20161122/20161122_7zvb.jpg",
                        "brand": "Le Petit Olivier",
                        "tags_weight": "200",
                        "tags_oldprice": "467"
                    },
                    {
                        "name": "Magnolia Nobile Парфумована вода",
                        "price": "2341",
                        "url": "https://site.com/catalog/suhaya-detskaya-molochnaya-smes-hipp-combiotic-2-750-g",
                        "imageurl": "https://site.com/uploads/product/big/20161122/20161122_7zvb.jpg",
                        "brand": "Acqua Di Parma",
                        "tags_weight": "100",
                        "tags_oldprice": "4467"
                    }
                ]
            }
        }
    ]
}"""
CREATE_CONTACT = """{
    "eventTypeKey": "create_contact",
    "keyValue": "site@com.net",
    "params":
    [
        {
            "name": "email",
            "value": "site@ukr.net"
        },
        {
            "name": "phone",
            "value": "380501234567"
        },
        {
            "name": "externalCustomerId",
            "value": "AV13760"
        },
        {
            "name": "json",
            "value":
            {
                "profileInputs":
                [
                    {
                        "profileInputId": 10001,
                        "value": "2020-11-23"
                    }
                ]
            }
        }
    ]
}"""
PASSWORD_RECOVERY = """{
"eventTypeKey": "password_recovery",
"keyValue": "site@com.net",
"params": [{
"name": "EmailAddress",
"value": "site@ukr.net"
},
{
"name": "password",
"value": "12345678"
}
]
}"""
SEED_CONTACT_JSON = (
    '{"firstname":"...","lastname":"...","sms":"...","town":"...","timeZone":"Etc/GMT+03","languageCode":"uk",'
    '"profileInputs":[{"profileInputId":10001,"value":"..."}],"confirmed":false}'
)


@pytest.fixture
def shop(db: sessionmaker[Session]) -> Tenant:
    spec = workspace_spec(
        "esp",
        contact_fields=[{"name": "birthday", "type": "date", "number": 10001}],
        templates=[
            # The seed's own Velocity, with `data` meaning the `items` param (esputnik's Email > JSON).
            make_template(
                "cart",
                "You left $!data.get('array').get(0).get('name') behind",
                "#foreach($!item in $!data.get('array'))$!item.get('name'): $!item.get('price')\n#end",
                syntax="velocity",
                data_param="items",
            ),
            make_template("recovery", "Password recovery", "Your password: $!data.get('password')", syntax="velocity"),
        ],
        automations=[
            make_automation("Cart", "cart", trigger="abandoned_cart"),
            make_automation("Recovery", "recovery", trigger="password_recovery", transactional=True),
        ],
    )
    return make_tenant(db, spec)


def with_key(body: str, key_value: str) -> str:
    """The seed's body with its keyValue replaced, so tests do not dedupe each other's events away."""
    return body.replace('"keyValue": "site@com.net"', f'"keyValue": "{key_value}"')


def workspace_id(db: sessionmaker[Session], tenant: Tenant) -> int:
    with db() as session:
        return session.scalars(select(Workspace.id).where(Workspace.key == tenant.key)).one()


def test_abandoned_cart_example_creates_the_event_type_and_sends_the_items(
    api_url: str, shop: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    response = post(api_url, basic(shop.token), ABANDONED_CART)

    assert response.status_code == 200, response.text
    [mail] = wait_until(lambda: sink.to("site@ukr.net", sender=shop.sender), what="the cart email")
    assert mail.message["Subject"] == "You left Hair styler behind"
    text = mail.message.get_body(("plain",))
    assert text is not None
    lines = text.get_content().splitlines()  # a text part travels with CRLF line ends
    assert lines == ["Hair styler: 341", "Magnolia Nobile Парфумована вода: 2341"]
    with db() as session:
        keys = session.scalars(select(EventType.key).where(EventType.workspace_id == workspace_id(db, shop)))
        assert "abandoned_cart" in set(keys)


def test_create_contact_example_updates_the_contact_card(api_url: str, shop: Tenant, db: sessionmaker[Session]) -> None:
    response = post(api_url, {"Authorization": f"Bearer {shop.token}"}, CREATE_CONTACT)
    assert response.status_code == 200, response.text

    def contact() -> Contact | None:
        with db() as session:
            return session.scalars(
                select(Contact).where(Contact.workspace_id == workspace_id(db, shop), Contact.email == "site@ukr.net")
            ).one_or_none()

    stored = wait_until(contact, what="the contact")
    assert (stored.phone, stored.external_id, stored.fields) == ("+380501234567", "AV13760", {"birthday": "2020-11-23"})


def test_password_recovery_example_sends_the_password(api_url: str, shop: Tenant, sink: Sink) -> None:
    response = post(api_url, basic(shop.token), with_key(PASSWORD_RECOVERY, "recovery-1"))
    assert response.status_code == 200, response.text
    [mail] = wait_until(
        lambda: (
            sink.to("site@ukr.net", sender=shop.sender)
            and [m for m in sink.to("site@ukr.net", sender=shop.sender) if m.message["Subject"] == "Password recovery"]
        ),
        what="the recovery email",
    )
    body = mail.message.get_body(("plain",))
    assert body is not None
    assert body.get_content().strip() == "Your password: 12345678"


def test_same_key_value_sends_once(api_url: str, shop: Tenant, sink: Sink, db: sessionmaker[Session]) -> None:
    body = with_key(PASSWORD_RECOVERY, "once-1").replace("site@ukr.net", "once@example.com")
    assert post(api_url, basic(shop.token), body).status_code == 200
    assert post(api_url, basic(shop.token), body).status_code == 200
    wait_until(lambda: sink.to("once@example.com", sender=shop.sender), what="the email")
    with db() as session:
        events = session.scalars(select(Event).where(Event.workspace_id == workspace_id(db, shop))).all()
    assert len(events) == 1
    assert len(sink.to("once@example.com", sender=shop.sender)) == 1


def test_seed_contact_json_example_lists_each_non_valid_field(api_url: str, shop: Tenant) -> None:
    body = {
        "eventTypeKey": "signup",
        "keyValue": "k-1",
        "params": [{"name": "contactJson", "value": SEED_CONTACT_JSON}],
    }
    response = post(api_url, basic(shop.token), body)
    assert response.status_code == 400, response.text
    fields = [error["field"] for error in response.json()["errors"]]
    assert fields == ["params.contactJson.sms", "params.contactJson.profileInputs[0].value"]
    too_long = {"firstname": "x" * 61, "sms": "+1-541-754-3010"}
    body["params"] = [{"name": "contactJson", "value": too_long}]
    response = post(api_url, basic(shop.token), body)
    assert [e["field"] for e in response.json()["errors"]] == ["params.contactJson.firstname"]


def test_valid_contact_json_updates_the_contact(api_url: str, shop: Tenant, db: sessionmaker[Session]) -> None:
    contact_json = {
        "firstname": "Ann",
        "sms": "+1-541-754-3010",
        "profileInputs": [{"profileInputId": 10001, "value": "1990-01-02"}],
    }
    body = {
        "eventTypeKey": "signup",
        "keyValue": "cj-1",
        "params": [
            {"name": "email", "value": "cj@example.com"},
            {"name": "contactJson", "value": json.dumps(contact_json)},
        ],
    }
    assert post(api_url, basic(shop.token), body).status_code == 200

    def contact() -> Contact | None:
        with db() as session:
            return session.scalars(
                select(Contact).where(Contact.workspace_id == workspace_id(db, shop), Contact.email == "cj@example.com")
            ).one_or_none()

    stored = wait_until(contact, what="the contact")
    assert (stored.phone, stored.fields) == ("+15417543010", {"firstname": "Ann", "birthday": "1990-01-02"})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"eventTypeKey": "bad,key", "keyValue": "k"}, "eventTypeKey"),
        ({"eventTypeKey": "bad\u2019key", "keyValue": "k"}, "eventTypeKey"),
        ({"eventTypeKey": "x" * 101, "keyValue": "k"}, "eventTypeKey"),
        ({"eventTypeKey": "ok", "keyValue": "who?"}, "keyValue"),
        ({"eventTypeKey": "ok", "keyValue": "k" * 301}, "keyValue"),
        ({"keyValue": "k"}, "eventTypeKey"),
        ({"eventTypeKey": "ok", "params": [{"name": "password", "value": "x"}]}, "body"),
        ({"eventTypeKey": "ok", "params": [{"name": "externalCustomerId", "value": "null"}]}, "body"),
        ({"eventTypeKey": "ok", "params": [{"name": "externalCustomerId", "value": " "}]}, "body"),
        ({"eventTypeKey": "ok", "params": [{"name": "externalCustomerId", "value": None}]}, "body"),
    ],
)
def test_invalid_events_are_400_naming_the_field(
    api_url: str, shop: Tenant, body: dict[str, object], field: str
) -> None:
    response = post(api_url, basic(shop.token), body)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == field


def test_external_customer_id_alone_identifies_the_contact(api_url: str, shop: Tenant) -> None:
    body = {"eventTypeKey": "visit", "params": [{"name": "externalCustomerId", "value": "AV1"}]}
    assert post(api_url, basic(shop.token), body).status_code == 200


def test_body_over_20_kb_is_413(api_url: str, shop: Tenant) -> None:
    body = {"eventTypeKey": "big", "keyValue": "k", "params": [{"name": "blob", "value": "x" * 20 * 1024}]}
    response = post(api_url, basic(shop.token), body)
    assert response.status_code == 413
    assert "20480" in response.json()["message"]


def test_auth_failures_are_401(api_url: str, shop: Tenant) -> None:
    for headers in ({}, basic("wrong"), {"Authorization": "Basic !!!"}, {"Authorization": "Bearer wrong"}):
        assert post(api_url, headers, PASSWORD_RECOVERY).status_code == 401


def test_events_stay_in_the_tokens_workspace(api_url: str, shop: Tenant, other_tenant: Tenant, sink: Sink) -> None:
    body = {"eventTypeKey": "ONLY_OTHER", "keyValue": "x-1", "params": [{"name": "email", "value": "iso@example.com"}]}
    assert post(api_url, basic(shop.token), body).status_code == 200
    control = {
        "eventTypeKey": "password_recovery",
        "keyValue": "x-2",
        "params": [{"name": "email", "value": "iso@example.com"}],
    }
    assert post(api_url, basic(shop.token), control).status_code == 200
    wait_until(lambda: sink.to("iso@example.com", sender=shop.sender), what="the control email")
    assert sink.to("iso@example.com", sender=other_tenant.sender) == []


def stored_contact(db: sessionmaker[Session], tenant: Tenant, email: str) -> Contact:
    def contact() -> Contact | None:
        with db() as session:
            return session.scalars(
                select(Contact).where(Contact.workspace_id == workspace_id(db, tenant), Contact.email == email)
            ).one_or_none()

    return wait_until(contact, what=f"the contact {email}")


def plain_text(mail: ReceivedMail) -> str:
    body = mail.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).strip()


def recovery_mail(sink: Sink, tenant: Tenant, address: str) -> str:
    [mail] = wait_until(lambda: sink.to(address, sender=tenant.sender), what=f"the recovery email to {address}")
    return plain_text(mail)


def test_v1_path_with_escaped_json_sends_what_v2_sends(api_url: str, shop: Tenant, sink: Sink) -> None:
    # The v1 clients (PHP's json_encode, the Python client) escape nested JSON into the value string.
    cart = json.loads(ABANDONED_CART)
    cart["keyValue"] = "v1-cart"
    cart["params"] = [
        {"name": "email", "value": "v1@example.com"},
        {"name": "items", "value": json.dumps(cart["params"][1]["value"], ensure_ascii=False)},
    ]
    response = post(api_url, basic(shop.token), cart, version="v1")

    assert response.status_code == 200, response.text
    [mail] = wait_until(lambda: sink.to("v1@example.com", sender=shop.sender), what="the cart email")
    assert mail.message["Subject"] == "You left Hair styler behind"
    text = mail.message.get_body(("plain",))
    assert text is not None
    assert text.get_content().splitlines() == ["Hair styler: 341", "Magnolia Nobile Парфумована вода: 2341"]


def test_numeric_key_value_is_accepted_as_text(
    api_url: str, shop: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    body = {
        "eventTypeKey": "password_recovery",
        "keyValue": 1764684000,
        "params": [{"name": "email", "value": "number@example.com"}, {"name": "password", "value": "n-1"}],
    }
    response = post(api_url, basic(shop.token), body, version="v1")

    assert response.status_code == 200, response.text
    assert recovery_mail(sink, shop, "number@example.com") == "Your password: n-1"
    with db() as session:
        keys = session.scalars(select(Event.key).where(Event.workspace_id == workspace_id(db, shop))).all()
    assert "1764684000" in keys


def test_faulty_contact_data_leaves_the_card_alone_and_the_mail_still_goes(
    api_url: str, shop: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    body = {
        "eventTypeKey": "password_recovery",
        "keyValue": "faulty-1",
        "params": [
            {"name": "email", "value": "faulty@example.com"},
            {"name": "phone", "value": "1" * 40},
            {"name": "externalCustomerId", "value": "AV-FAULTY"},
            {"name": "json", "value": {"profileInputs": [{"profileInputId": 10001, "value": "2020-11-23"}]}},
            {"name": "password", "value": "f-1"},
        ],
    }
    response = post(api_url, basic(shop.token), body)

    assert response.status_code == 200, response.text
    assert recovery_mail(sink, shop, "faulty@example.com") == "Your password: f-1"
    stored = stored_contact(db, shop, "faulty@example.com")
    assert (stored.phone, stored.external_id, stored.fields) == (None, None, {})


def test_local_phone_is_read_in_the_configured_region(api_url: str, shop: Tenant, db: sessionmaker[Session]) -> None:
    # The shared stack runs with TRIPMAIL_PHONE_DEFAULT_REGION=UA.
    body = with_key(CREATE_CONTACT, "local-1").replace("site@ukr.net", "local@example.com")
    response = post(api_url, basic(shop.token), body.replace('"380501234567"', '"050 123 45 67"'))

    assert response.status_code == 200, response.text
    stored = stored_contact(db, shop, "local@example.com")
    assert (stored.phone, stored.fields) == ("+380501234567", {"birthday": "2020-11-23"})


def test_contact_id_of_the_platform_is_no_404_and_a_tripmail_one_addresses_its_contact(
    api_url: str, shop: Tenant, other_tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    platform = {
        "eventTypeKey": "password_recovery",
        "keyValue": "cid-1",
        "params": [
            {"name": "contactId", "value": 123456789},
            {"name": "email", "value": "cid@example.com"},
            {"name": "password", "value": "c-1"},
        ],
    }
    response = post(api_url, basic(shop.token), platform)
    assert response.status_code == 200, response.text
    assert recovery_mail(sink, shop, "cid@example.com") == "Your password: c-1"

    own = {
        "eventTypeKey": "password_recovery",
        "params": [
            {"name": "contactId", "value": stored_contact(db, shop, "cid@example.com").id},
            {"name": "password", "value": "c-2"},
        ],
    }
    response = post(api_url, basic(shop.token), own)
    assert response.status_code == 200, response.text
    wait_until(lambda: len(sink.to("cid@example.com", sender=shop.sender)) == 2, what="the second email")
    bodies = {plain_text(mail) for mail in sink.to("cid@example.com", sender=shop.sender)}
    assert bodies == {"Your password: c-1", "Your password: c-2"}

    # The same id under another workspace's token is as unknown there as the platform's own: its event names no one.
    own |= {"eventTypeKey": "ONLY_OTHER", "keyValue": "cid-other"}
    response = post(api_url, basic(other_tenant.token), own)
    assert response.status_code == 200, response.text

    def other_event() -> Event | None:
        with db() as session:
            return session.scalars(
                select(Event).where(Event.workspace_id == workspace_id(db, other_tenant), Event.key == "cid-other")
            ).one_or_none()

    assert wait_until(other_event, what="the other workspace's event").contact_id is None

"""Hostile input through the real api and worker: oversized and unreadable bodies, line breaks bound for headers,
template tricks and attachment names are refused or defused, and the answer says where.

Only SQLite's stack: every refusal here happens in the api or the renderer, which no database backend changes.
"""

import base64
import http.client
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.dialects.esputnik import MAX_BODY_BYTES as ESPUTNIK_MAX_BODY_BYTES
from tests.support.builders import (
    Tenant,
    apply_spec,
    make_automation,
    make_contact,
    make_template,
    make_tenant,
    make_token,
    make_workspace,
    password_reset_spec,
    unique_workspace_key,
    workspace_spec,
)
from tests.support.polling import wait_until
from tests.support.smtp_sink import ReceivedMail, Sink
from tripmail.config import Settings
from tripmail.models import Contact, Event, Message, Template, Workspace
from tripmail.setup.tokens import KNOWN_SCOPES

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")

DEFAULTS = Settings(_env_file=None)
LIMIT = DEFAULTS.max_body_bytes


def post_routes() -> dict[str, bool]:
    """Every POST path the api documents, with its path parameters filled in: whether it declares a token in a
    header or the query string, which the api checks before it reads the body."""
    paths = create_app(DEFAULTS).openapi()["paths"]
    return {
        re.sub(r"\{[^}]*\}", "x", path): bool(operations["post"].get("security"))
        for path, operations in paths.items()
        if "post" in operations
    }


POST_ROUTES = list(post_routes())
TOKEN_ROUTES = [path for path, takes_token in post_routes().items() if takes_token]


def limit_of(path: str) -> int:
    if path.startswith("/compat/esputnik/"):
        return ESPUTNIK_MAX_BODY_BYTES
    if path.startswith("/compat/altcraft/"):
        return DEFAULTS.altcraft_max_body_bytes
    return LIMIT if path in TOKEN_ROUTES else DEFAULTS.preauth_max_body_bytes


def assert_names_the_body(response: httpx.Response | http.client.HTTPResponse, text: str, path: str) -> None:
    """The refusal says why, in the route's own envelope; the native one also names the field."""
    body = response.read() if isinstance(response, http.client.HTTPResponse) else response.content
    assert text in body.decode(), body
    if not path.startswith("/compat/"):
        assert response.headers["content-type"] == "application/problem+json"
        assert httpx.Response(200, content=body).json()["field"] == "body"


@pytest.mark.parametrize("path", POST_ROUTES)
def test_a_body_declared_over_the_limit_is_413_before_it_is_sent(api_url: str, path: str) -> None:
    url = urlsplit(api_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    connection.putrequest("POST", path)
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(limit_of(path) + 1))
    connection.endheaders()  # and not one byte of the body: the answer must come without it
    response = connection.getresponse()
    assert response.status == 413
    assert_names_the_body(response, f"the limit is {limit_of(path)}", path)
    connection.close()


BAD_TOKEN = {"Authorization": "Bearer tm_live_not-a-real-token", "X-Authorization": "tm_live_not-a-real-token"}


@pytest.mark.parametrize("path", TOKEN_ROUTES)
def test_a_bad_token_is_refused_before_the_body_is_read(api_url: str, path: str) -> None:
    # What the route answers this token with a body it read: its 401, in its own envelope.
    read = httpx.post(f"{api_url}{path}", json={}, headers=BAD_TOKEN, timeout=10)
    assert read.status_code == 401, read.text
    url = urlsplit(api_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    connection.putrequest("POST", path)
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(limit_of(path)))  # within the limit: only the token can refuse it
    for name, value in BAD_TOKEN.items():
        connection.putheader(name, value)
    connection.endheaders()  # and not one byte of the body: an api that read it before the token would wait
    response = connection.getresponse()
    assert (response.status, response.headers["content-type"]) == (401, read.headers["content-type"])
    assert httpx.Response(401, content=response.read()).json() == read.json()
    connection.close()


def test_a_body_sent_in_chunks_is_read_no_further_than_the_limit(api_url: str, tenant: Tenant) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"event": "FORGOT_PASSWORD", "contact": {"email": "a@example.com"}, "data": {"blob": "'
        for _ in range(LIMIT // 2**20 + 1):
            yield b"x" * 2**20
        yield b'"}}'

    response = httpx.post(
        f"{api_url}/v1/events",
        content=chunks(),
        headers={"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert_names_the_body(response, f"more than {LIMIT} bytes", "/v1/events")


@pytest.fixture
def every_scope(db: sessionmaker[Session]) -> str:
    """A token that every route's scope check lets through."""
    key = unique_workspace_key("scopes")
    with db.begin() as session:
        apply_spec(session, password_reset_spec(key))
        return make_token(session, key, sorted(KNOWN_SCOPES))


NESTED_10_000_DEEP = b'{"data": {"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}"
NUMBER_OF_5_000_DIGITS = b'{"data": {"n": 1' + b"0" * 4_999 + b"}}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [(NESTED_10_000_DEEP, "JSON nested too deeply"), (NUMBER_OF_5_000_DIGITS, "a number has more than 4300 digits")],
    ids=["nested", "long-number"],
)
@pytest.mark.parametrize("path", POST_ROUTES)
def test_json_python_cannot_read_is_refused_naming_the_body(
    api_url: str, every_scope: str, path: str, body: bytes, reason: str
) -> None:
    # A valid token: a route that checks its token before the body would refuse the request for the want of one.
    headers = {"Authorization": f"Bearer {every_scope}", "X-Authorization": every_scope}
    headers["Content-Type"] = "application/json"
    response = httpx.post(f"{api_url}{path}", content=body, headers=headers, timeout=10)
    assert response.status_code in (400, 422), response.text
    assert_names_the_body(response, reason, path)


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN"])
def test_numbers_beyond_a_double_are_422_naming_where(api_url: str, tenant: Tenant, number: str) -> None:
    response = httpx.post(
        f"{api_url}/v1/events",
        content=f'{{"event": "X", "contact": {{"email": "a@example.com"}}, "data": {{"n": [{number}]}}}}'.encode(),
        headers={"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert "data.n.0: numbers must be finite" in response.json()["detail"]


def events_of(db: sessionmaker[Session], workspace_key: str) -> int:
    with db() as session:
        query = select(func.count()).select_from(Event).join(Workspace).where(Workspace.key == workspace_key)
        return session.scalars(query).one()


def test_line_breaks_in_a_contact_email_are_422_and_nothing_is_queued(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    headers = {"Authorization": f"Bearer {tenant.token}"}
    for email in ("ann@example.com\r\nBcc: evil@example.com", "ann@example.com\nBcc: evil@example.com"):
        body = {"event": "FORGOT_PASSWORD", "contact": {"email": email}}
        response = httpx.post(f"{api_url}/v1/events", json=body, headers=headers, timeout=10)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "contact.email"
    address = f"{unique_workspace_key('after')}@example.com"
    body = {"event": "FORGOT_PASSWORD", "contact": {"email": address}}
    assert httpx.post(f"{api_url}/v1/events", json=body, headers=headers, timeout=10).status_code == 202
    wait_until(lambda: sink.to(address), what="the valid event's mail")
    assert events_of(db, tenant.key) == 1
    assert sink.to("evil@example.com") == []


@pytest.fixture
def letters(db: sessionmaker[Session]) -> Tenant:
    """A workspace whose subject shows a contact field and event data, and whose body tries the sandbox."""
    spec = workspace_spec(
        "hostile",
        sender="Acme",
        event_types=[{"key": "LETTER"}],
        templates=[
            {
                "key": "letter",
                "subject": "Hi {{ contact.first_name }}: {{ data.title }}",
                "text": "[{{ ''.__class__.__mro__ }}][{{ cycler.__init__.__globals__ }}][{{ lipsum.__globals__.os }}]"
                "[{{ data.__class__ }}] {{ data.title }} {{ data.body }}",
                "html": "<p>{{ data.body }}</p>",
            },
            make_template("escape", "x", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
        ],
        automations=[
            {"name": t, "trigger": "LETTER", "transactional": True, "steps": [{"send_email": {"template": t}}]}
            for t in ("letter", "escape")
        ],
    )
    return make_tenant(db, spec)


def test_line_breaks_for_the_subject_and_template_syntax_in_data_reach_no_header_and_run_nothing(
    api_url: str, letters: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    address = f"{unique_workspace_key('ann')}@example.com"
    body = {
        "event": "LETTER",
        "contact": {"email": address, "fields": {"first_name": "Ann\r\nBcc: evil@example.com"}},
        "data": {
            "title": "News\nX-Injected: yes\r\n\r\nbody",
            "body": "{{ 7*7 }}{% endraw %}{{ 6*6 }}{% raw %}${7*7}#set($x = 1)",
        },
    }
    response = httpx.post(
        f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {letters.token}"}, timeout=10
    )
    assert response.status_code == 202, response.text
    mail: ReceivedMail = wait_until(lambda: next(iter(sink.to(address)), None), what="the letter")
    message = mail.message
    assert mail.rcpt_tos == [address]
    assert message["Subject"] == "Hi Ann Bcc: evil@example.com: News X-Injected: yes body"
    assert message["Bcc"] is None and message["X-Injected"] is None
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.startswith("[][][][] News\nX-Injected")
    assert text.endswith("{{ 7*7 }}{% endraw %}{{ 6*6 }}{% raw %}${7*7}#set($x = 1)")
    assert "49" not in text and "36" not in text
    assert sink.to("evil@example.com") == []

    def escape_settled() -> str | None:
        with db() as session:
            query = select(Message.status, Message.smtp_reply).join(Contact).where(Contact.email == address)
            rows = session.execute(query).all()
        return next((f"{status}: {reply}" for status, reply in rows if status != "sent" and reply), None)

    failure = wait_until(escape_settled, what="the escaping template's message settled")
    assert failure.startswith("failed: template escape:") and "unsafe" in failure
    assert len(sink.to(address)) == 1


@pytest.fixture
def templates_past_bounds(db: sessionmaker[Session]) -> Tenant:
    """A workspace whose GROW event sends three emails: one builds past the sandbox's bound, one renders past its
    time bound, one is plain."""
    spec = workspace_spec(
        "bounds",
        sender="Acme",
        event_types=[{"key": "GROW"}],
        templates=[
            make_template("grow", "Grow", "{{ 'a' * 10**9 }}"),
            {
                "key": "spin",
                "subject": "Spin",
                "text": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            },
            make_template("plain", "Plain for {{ contact.email }}", "Hello"),
        ],
        automations=[
            {"name": t, "trigger": "GROW", "transactional": True, "steps": [{"send_email": {"template": t}}]}
            for t in ("grow", "spin", "plain")
        ],
    )
    return make_tenant(db, spec)


def test_a_template_past_a_bound_fails_its_message_with_the_rule_and_the_others_go_out(
    api_url: str, templates_past_bounds: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    address = f"{unique_workspace_key('grow')}@example.com"
    body = {"event": "GROW", "contact": {"email": address}}
    headers = {"Authorization": f"Bearer {templates_past_bounds.token}"}
    response = httpx.post(f"{api_url}/v1/events", json=body, headers=headers, timeout=10)
    assert response.status_code == 202, response.text

    def settled() -> dict[str, str] | None:
        with db() as session:
            query = (
                select(Template.key, Message.status, Message.smtp_reply)
                .join(Template, Template.id == Message.template_id)
                .join(Contact)
                .where(Contact.email == address)
            )
            rows = session.execute(query).all()
        done = {key: f"{status}: {reply}" for key, status, reply in rows if status in ("sent", "failed")}
        return done if len(done) == 3 else None

    outcomes = wait_until(settled, what="the three messages settled")
    assert outcomes["grow"] == (
        "failed: template grow: '*' would build 1,000,000,000 characters; a template may build at most 1,000,000"
    )
    assert outcomes["spin"] == (
        "failed: template spin: rendering took longer than 2 s (TRIPMAIL_RENDER_TIMEOUT_S): a loop or macro "
        "runs too long"
    )
    assert outcomes["plain"].startswith("sent: ")
    [mail] = sink.to(address)
    assert mail.message["Subject"] == f"Plain for {address}"


AUTOMATION_ID = 904_091


@pytest.fixture(scope="session")
def files(db: sessionmaker[Session]) -> tuple[Tenant, str]:
    """An altcraft trigger campaign that mails whatever files it is sent, and a profile for it to reach."""
    spec = workspace_spec(
        "files",
        sender="Files",
        templates=[make_template("files", "Your files", "Attached.")],
        automations=[make_automation("Files", "files", id=AUTOMATION_ID)],
    )
    address = f"{unique_workspace_key('p')}@example.com"
    with db.begin() as session:
        workspace_id = make_workspace(session, spec)
        token = make_token(session, spec["workspace"])
        make_contact(session, workspace_id, address, now=datetime.now(UTC))
    return Tenant(spec["workspace"], token), address


def send_files(api_url: str, files: tuple[Tenant, str], attach: list[dict[str, str]]) -> httpx.Response:
    body: dict[str, Any] = {"token": files[0].token, "id": AUTOMATION_ID, "email": files[1], "attach": attach}
    return httpx.post(f"{api_url}/compat/altcraft/api/v1.1/campaigns/triggers/start/", json=body, timeout=30)


def data_uri(content: bytes) -> str:
    return "data:text/plain;base64," + base64.b64encode(content).decode()


def test_attachment_names_are_reduced_to_a_file_name(api_url: str, files: tuple[Tenant, str], sink: Sink) -> None:
    names = ["../../etc/passwd", "C:\\Windows\\System32\\evil.bat", "/srv/x.txt", "..\\../.hidden"]
    before = len(sink.to(files[1]))
    response = send_files(api_url, files, [{"name": name, "data": data_uri(b"x")} for name in names])
    assert response.json()["error"] == 0, response.text
    mail = wait_until(lambda: sink.to(files[1])[before:] or None, what="the mail with files")[0]
    assert [part.get_filename() for part in mail.message.iter_attachments()] == [
        "passwd",
        "evil.bat",
        "x.txt",
        "hidden",
    ]


@pytest.mark.parametrize(
    ("attach", "field", "reason"),
    [
        ([{"name": "a\r\nBcc: evil@example.com.txt", "data": data_uri(b"x")}], "attach[0].name", "control characters"),
        (
            [{"name": "ok.txt", "data": data_uri(b"x")}, {"name": "a\x00.txt", "data": data_uri(b"x")}],
            "attach[1].name",
            "control characters",
        ),
        ([{"name": "../", "data": data_uri(b"x")}], "attach[0].name", "names no file"),
        ([{"name": "a.txt", "data": "data:text/plain;base64,not base64!"}], "attach[0].data", "does not decode"),
        ([{"name": "a.txt", "data": "data:text/plain,plain text"}], "attach[0].data", "data:<mime>;base64"),
    ],
    ids=["crlf", "nul", "no-name", "not-base64", "not-a-base64-uri"],
)
def test_a_bad_attachment_is_400_naming_it(
    api_url: str, files: tuple[Tenant, str], attach: list[dict[str, str]], field: str, reason: str
) -> None:
    response = send_files(api_url, files, attach)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == 400
    assert f"{field}: " in response.json()["error_text"] and reason in response.json()["error_text"]


def test_an_altcraft_body_over_its_own_limit_is_413_in_altcraft_s_envelope(
    api_url: str, files: tuple[Tenant, str]
) -> None:
    limit = DEFAULTS.altcraft_max_body_bytes
    response = send_files(api_url, files, [{"name": "a.bin", "data": data_uri(bytes(limit))}])
    assert response.status_code == 413, response.text
    assert response.json() == {
        "data": None,
        "error": 413,
        "error_text": f"the body is {len(response.request.content)} bytes; the limit is {limit}, "
        "for a body read before the request is authenticated",
    }

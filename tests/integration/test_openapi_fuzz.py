"""Schemathesis over every operation of the live api's /openapi.json, native and every dialect (issue 9).

Each operation gets the credentials its route reads (a Bearer, a raw or X- Authorization header, HTTP Basic, the
token in altcraft's body, a campaign's link in altcraft's v1.0 path), so the generated requests get past
authentication to validation and the domain; a second run sends junk credentials, so every 401 is checked too.
Every answer must be no server error, carry a status and a content type the operation declares, and match the
schema declared for that status. The tally of statuses per operation shows the fuzzer got past authentication.
(Some 401s in the first run are schemathesis' own: its negative cases drop a declared security header.)

Not checked: that schema-violating requests are refused and schema-valid ones accepted (schemathesis'
negative_data_rejection, positive_data_acceptance). The request schemas are looser than the routes on purpose
(an identifier required among several, esputnik's forbidden characters, an event that must exist) and pydantic's
lax reading is the seeds' wire format (cocomail sends "true" as a string).
"""

import base64
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from tests.support.builders import Tenant, make_token
from tripmail.config import Settings
from tripmail.contacts.store import upsert_contact
from tripmail.contacts.unsubscribe import unsubscribe_token
from tripmail.ids import utcnow
from tripmail.models import Automation, EventType, Workspace
from tripmail.schemas.trigger import Audience, ContactUpdate
from tripmail.setup.tokens import KNOWN_SCOPES

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Bounded and reproducible: a few seconds per operation on two cores, the same cases on every run.
FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
REFUSED = (401, 403)
Case = schemathesis.Case[APIOperation[Any, Any, Any, Any]]
# Operations that take no credential; altcraft's v1.0 link is one, in the path (a junk link is 404).
OPEN = ("GET /healthz", "GET /livez", "GET /readyz", "GET /unsubscribe/", "POST /unsubscribe/")


@dataclass(frozen=True)
class Credentials:
    """A token with every scope the api knows, and what of the workspace a request may name."""

    token: str
    link: str  # altcraft v1.0 link of the workspace's campaign
    automation_id: int
    event_key: str
    event_type_uuid: str
    template_key: str
    contact_id: str
    contact_email: str
    unsubscribe_token: str


def credit(case: Case, credentials: Credentials) -> None:
    """Put the credentials where the operation's route reads them."""
    path, token = case.operation.path, credentials.token
    if path.startswith("/compat/cocomail/"):
        case.headers["Authorization"] = token
    elif path.startswith("/compat/esputnik/"):
        case.headers["Authorization"] = "Basic " + base64.b64encode(f"fuzz:{token}".encode()).decode()
    elif path.startswith("/compat/bunce/"):
        case.headers["X-Authorization"] = token
    elif path.startswith("/compat/altcraft/trg/"):
        case.path_parameters = {**(case.path_parameters or {}), "link": credentials.link}
    elif path.startswith("/compat/altcraft/"):
        if isinstance(case.body, dict):
            case.body = {**case.body, "token": token, "id": credentials.automation_id}
    elif not path.startswith(("/unsubscribe/", "/healthz")):
        case.headers["Authorization"] = f"Bearer {token}"


def aim(case: Case, credentials: Credentials) -> None:
    """Name what the workspace has (its event, template, contact) in place of what the fuzzer made up, so the
    request reaches the code behind "not found": rendering, the contact upsert, the event's params."""
    body = case.body if isinstance(case.body, dict) else None
    path = case.operation.path
    named = {
        "/v1/events": ("body", "event", credentials.event_key),
        "/v1/templates/{key}/preview": ("path", "key", credentials.template_key),
        "/v1/suppressions": ("body", "email", credentials.contact_email),
        "/v1/suppressions/{email}": ("path", "email", credentials.contact_email),
        "/unsubscribe/{token}": ("path", "token", credentials.unsubscribe_token),
        "/compat/cocomail/events/trigger": ("body", "identifier", credentials.event_key),
        "/compat/bunce/v1/events/trigger": ("body", "event_id", credentials.event_type_uuid),
        "/compat/emailsendx/api/v1/contacts/{contact_id}/events": ("path", "contact_id", credentials.contact_id),
        "/compat/altcraft/trg/{link}/{value}": ("path", "value", credentials.contact_email),
    }.get(path)
    if named is None:
        return
    where, name, value = named
    if where == "path":
        case.path_parameters = {**(case.path_parameters or {}), name: value}
    elif body is not None:
        case.body = {**body, name: value}


def discredit(case: Case) -> None:
    """Junk in every place a token may go."""
    junk = "tm_live_not-a-real-token"
    cocomail = case.operation.path.startswith("/compat/cocomail/")
    case.headers.update({"Authorization": junk if cocomail else f"Bearer {junk}", "X-Authorization": junk})
    if isinstance(case.body, dict) and case.operation.path.startswith("/compat/altcraft/api/"):
        case.body = {**case.body, "token": junk}


@pytest.fixture
def credentials(tenant: Tenant, db: sessionmaker[Session]) -> Credentials:
    with db.begin() as session:
        token = make_token(session, tenant.key, sorted(KNOWN_SCOPES))
        automation = session.scalars(
            select(Automation)
            .join(Workspace, Workspace.id == Automation.workspace_id)
            .where(Workspace.key == tenant.key)
        ).one()
        event_type = session.scalars(select(EventType).where(EventType.workspace_id == automation.workspace_id)).one()
        workspace = session.get_one(Workspace, automation.workspace_id)
        email = f"fuzz@{tenant.key}.example.com"
        contact = upsert_contact(session, workspace.id, Audience(email=email), ContactUpdate(), now=utcnow())
        assert automation.link is not None
        return Credentials(
            token=token,
            link=automation.link,
            automation_id=automation.id,
            event_key=event_type.key,
            event_type_uuid=event_type.uuid,
            template_key="reset",
            contact_id=contact.id,
            contact_email=email,
            unsubscribe_token=unsubscribe_token(workspace, contact.id),
        )


def statuses_of(tally: Counter[tuple[str, int]]) -> dict[str, Counter[int]]:
    """The tally by operation, printed: the numbers behind a run's assertion (shown with -s)."""
    by_operation: dict[str, Counter[int]] = {}
    for (label, status), count in sorted(tally.items()):
        by_operation.setdefault(label, Counter())[status] = count
    for label, statuses in by_operation.items():
        print(f"{label}: {dict(statuses)}")
    return by_operation


@pytest.fixture
def tally(workers: list[str]) -> Iterator[Counter[tuple[str, int]]]:
    """Statuses per operation over the run; most answers of each operation must be past authentication."""
    tally: Counter[tuple[str, int]] = Counter()
    yield tally
    for label, statuses in statuses_of(tally).items():
        refused = sum(statuses[status] for status in REFUSED)
        assert refused < statuses.total() / 2, f"{label} stopped at authentication: {dict(statuses)}"


@pytest.fixture
def refusals(workers: list[str]) -> Iterator[Counter[tuple[str, int]]]:
    """Statuses per operation over the junk-credentials run; each operation that takes a credential refused it."""
    tally: Counter[tuple[str, int]] = Counter()
    yield tally
    for label, statuses in statuses_of(tally).items():
        if not label.startswith(OPEN):
            assert statuses[401] or statuses[404], f"{label} let junk credentials through: {dict(statuses)}"


# The app's own document, built at collection so each operation is a test of its own; the live api serves the same
# one (checked below). schemathesis' lazy loader (`from_fixture`) does not run on pytest 9.2.
OPENAPI = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)
# Refusing junk credentials needs no edge cases of every parameter (the coverage phase: ~230 requests for
# altcraft's start alone); generated examples suffice.
examples_only = schemathesis.openapi.from_dict(
    OPENAPI, config=schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": False}}})
)


def test_the_live_api_serves_the_fuzzed_document(api_url: str) -> None:
    response = httpx.get(f"{api_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.json() == OPENAPI


@schema.parametrize()
@FUZZ
def test_every_operation_answers_as_its_schema_says(
    case: Case, api_url: str, credentials: Credentials, tally: Counter[tuple[str, int]]
) -> None:
    credit(case, credentials)
    label = case.operation.label
    # Every other case of an operation names what the workspace has; the rest keep the fuzzer's names.
    if sum(count for (other, _), count in tally.items() if other == label) % 2 == 0:
        aim(case, credentials)
    response = case.call_and_validate(base_url=api_url, checks=CHECKS, timeout=30)
    tally[(label, response.status_code)] += 1


@examples_only.parametrize()
@settings(FUZZ, max_examples=5)
def test_junk_credentials_answer_as_the_schema_says(
    case: Case, api_url: str, refusals: Counter[tuple[str, int]]
) -> None:
    discredit(case)
    response = case.call_and_validate(base_url=api_url, checks=CHECKS, timeout=30)
    refusals[(case.operation.label, response.status_code)] += 1

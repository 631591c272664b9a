"""A 20,000-contact audience, selected by $in and by a range query, through the whole stack: one email each."""

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import (
    Tenant,
    contact_row,
    make_automation,
    make_template,
    make_token,
    make_workspace,
    workspace_spec,
)
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tripmail.models import Contact

SIZE = 20_000
CAMPAIGN = 2_000_001

# On SQLite alone: 40,000 emails take a minute and a half more on PostgreSQL. The audience queries are unit-tested
# on both backends, and test_scale_out sends 2,000 emails through two workers on PostgreSQL.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")


@pytest.fixture(scope="module")
def crowd(db: sessionmaker[Session]) -> tuple[Tenant, list[str]]:
    spec = workspace_spec(
        "crowd",
        sender="Crowd",
        contact_fields=[{"name": "CRM_ID", "type": "string"}, {"name": "rank", "type": "number"}],
        templates=[make_template("hello", "Hello {{ contact.CRM_ID }}", "rank {{ contact.rank }}")],
        automations=[make_automation("Crowd", "hello", id=CAMPAIGN)],
    )
    now = datetime.now(UTC)
    key = spec["workspace"]
    with db.begin() as session:
        workspace_id = make_workspace(session, spec)
        token = make_token(session, key)
        emails = [f"{key}-{index}@example.com" for index in range(SIZE)]
        rows = [
            contact_row(
                workspace_id, f"{key}-{index:06}", email, {"CRM_ID": f"crm-{index}", "rank": 1_000_000 + index}, now
            )
            for index, email in enumerate(emails)
        ]
        # Bystanders the queries must leave out.
        rows += [
            row | {"id": f"{row['id']}-x", "email": f"x{row['email']}", "fields": {"CRM_ID": "other", "rank": 5}}
            for row in rows[:500]
        ]
        session.execute(insert(Contact), rows)
    return Tenant(key, token), emails


def start(api_url: str, tenant: Tenant, custom_request: dict[str, object]) -> None:
    body = {"token": tenant.token, "id": CAMPAIGN, "custom_request": custom_request}
    response = httpx.post(f"{api_url}/compat/altcraft/api/v1.1/campaigns/triggers/start/", json=body, timeout=60)
    assert response.json() == {"data": None, "error": 0, "error_text": "Successful operation"}, response.text


# 40,000 emails through a sink that shares this process: longer than the suite's default limit per test.
@pytest.mark.timeout(600)
def test_every_member_gets_exactly_one_email_per_event(
    api_url: str, crowd: tuple[Tenant, list[str]], sink: Sink
) -> None:
    tenant, emails = crowd
    expected = set(emails)

    start(api_url, tenant, {"CRM_ID": {"$in": [f"crm-{index}" for index in range(SIZE)]}})
    wait_until(lambda: sink.count_from(tenant.sender) >= SIZE, timeout=300, what=f"{SIZE} emails for the $in audience")
    after_in = sink.recipients_from(tenant.sender)
    assert set(after_in) == expected
    assert set(after_in.values()) == {1}

    start(api_url, tenant, {"rank": {"$gte": 1_000_000, "$lt": 1_000_000 + SIZE}})
    wait_until(
        lambda: sink.count_from(tenant.sender) >= 2 * SIZE,
        timeout=300,
        what=f"{SIZE} more emails for the range audience",
    )
    after_range = sink.recipients_from(tenant.sender)
    assert set(after_range) == expected
    assert set(after_range.values()) == {2}

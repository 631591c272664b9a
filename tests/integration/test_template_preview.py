"""POST /v1/templates/{key}/preview through the real api: sample data in, the rendered parts (or where they fail)
out — seed 002's "View message"."""

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import apply_spec, make_template, make_token, unique_workspace_key


@pytest.fixture
def editor(db: sessionmaker[Session]) -> tuple[str, str]:
    """A workspace with a Jinja, a Velocity and a failing template, and a token that may read templates."""
    key = unique_workspace_key("preview")
    spec = {
        "workspace": key,
        "templates": [
            {
                "key": "reset",
                "subject": "Reset for {{ contact.first_name }}",
                "html": "<a href='{{ link }}'>Reset</a>",
                "text": "Reset: {{ link }}",
            },
            {
                "key": "cart",
                "syntax": "velocity",
                "data_param": "items",
                "subject": "You left $!data.get('array').get(0).get('name') behind",
                "text": "#foreach($!item in $!data.get('array'))$!item.get('name'): $!item.get('price')\n#end",
            },
            make_template("total", "Total", "Hello\nYour total: {{ data.amount + 1 }}"),
            make_template("huge", "Huge", "Hello\n{{ data.pad * data.times }}"),
            {
                "key": "spin",
                "subject": "Spin",
                "html": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            },
        ],
    }
    with db.begin() as session:
        apply_spec(session, spec)
        return make_token(session, key, ["templates:read"]), make_token(session, key, ["events:write"])


def preview(api_url: str, token: str, key: str, body: object) -> httpx.Response:
    return httpx.post(
        f"{api_url}/v1/templates/{key}/preview", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_a_template_renders_with_sample_data(api_url: str, editor: tuple[str, str]) -> None:
    body = {"contact": {"first_name": "Ann"}, "data": {"link": "https://x/r?a=1&b=2"}}
    response = preview(api_url, editor[0], "reset", body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": "Reset for Ann",
        "html": "<a href='https://x/r?a=1&amp;b=2'>Reset</a>",
        "text": "Reset: https://x/r?a=1&b=2",
    }


def test_a_velocity_template_renders_as_the_seed_shows_it(api_url: str, editor: tuple[str, str]) -> None:
    items = {"array": [{"name": "Kettle", "price": 20}, {"name": "Mug", "price": 5}]}
    response = preview(api_url, editor[0], "cart", {"data": {"items": items}})
    assert response.status_code == 200, response.text
    assert response.json()["subject"] == "You left Kettle behind"
    assert response.json()["text"] == "Kettle: 20\nMug: 5\n"


def test_a_failing_template_names_the_part_and_the_line(api_url: str, editor: tuple[str, str]) -> None:
    response = preview(api_url, editor[0], "total", {"data": {"amount": "12"}})
    assert response.status_code == 422
    problem = response.json()
    assert problem["field"] == "text"
    assert problem["detail"].startswith("text: line 2: TypeError: ")


def test_a_template_past_a_bound_is_422_naming_the_part_the_line_and_the_rule(
    api_url: str, editor: tuple[str, str]
) -> None:
    response = preview(api_url, editor[0], "huge", {"data": {"pad": "a", "times": 10**9}})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "text"
    assert response.json()["detail"] == (
        "text: line 2: '*' would build 1,000,000,000 characters; a template may build at most 1,000,000"
    )
    response = preview(api_url, editor[0], "spin", {})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "html"
    assert response.json()["detail"] == (
        "html: line 1: rendering took longer than 2 s (TRIPMAIL_RENDER_TIMEOUT_S): a loop or macro runs too long"
    )
    # The api goes on answering: the render stopped.
    assert preview(api_url, editor[0], "huge", {"data": {"pad": "a", "times": 3}}).json()["text"] == "Hello\naaa"


def test_an_unknown_template_or_a_token_without_the_scope_is_refused(api_url: str, editor: tuple[str, str]) -> None:
    assert preview(api_url, editor[0], "nope", {}).status_code == 404
    refused = preview(api_url, editor[1], "reset", {})
    assert refused.status_code == 403
    assert "templates:read" in refused.json()["detail"]

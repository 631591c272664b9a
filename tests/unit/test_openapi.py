"""/openapi.json declares the refusals the api sends, not FastAPI's own 422 body, which it never sends."""

from typing import Any

import pytest

from api.app import create_app
from tripmail.config import Settings

DOCUMENT = create_app(Settings()).openapi()
OPERATIONS = [
    (f"{method.upper()} {path}", operation)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
]


def test_fastapis_validation_body_is_declared_nowhere() -> None:
    assert "HTTPValidationError" not in DOCUMENT["components"]["schemas"]


@pytest.mark.parametrize(("label", "operation"), OPERATIONS, ids=[label for label, _ in OPERATIONS])
def test_each_refusal_is_problem_json_or_the_dialects_envelope(label: str, operation: dict[str, Any]) -> None:
    refusals = {status: response for status, response in operation["responses"].items() if status[0] in "45"}
    if label == "GET /healthz":
        # Its own JSON, 200 or 503 alike: a probe reads which dependency is down.
        assert refusals["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/Health")
        return
    if label == "GET /livez":
        # It refuses nothing: whenever the process answers at all, it answers 200.
        assert refusals == {}
        return
    assert refusals, f"{label} declares no refusal"
    for status, response in refusals.items():
        [media_type] = response["content"]
        if label.split(" ")[1].startswith("/compat/"):
            dialect = label.split("/")[2]
            assert media_type == "application/json"
            assert response["content"][media_type]["schema"]["$ref"].lower().endswith(f"{dialect}error"), status
        else:
            assert media_type == "application/problem+json"
            assert response["content"][media_type]["schema"]["title"] == "Problem", status

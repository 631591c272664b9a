"""Logs through a real worker with TRIPMAIL_LOG_FORMAT=json: a line per event and per message, with their ids,
and nothing of the token or the message's content."""

import json
from typing import Any

import httpx

from tests.support.polling import wait_until
from tests.support.smtp_sink import running_sink
from tests.support.stack import OwnStack


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_name_the_event_and_the_message_and_nothing_secret(stack: OwnStack) -> None:
    stack.settings = stack.settings.model_copy(update={"log_format": "json"})
    tenant = stack.tenant("logs")
    email = f"{tenant.key}@example.com"
    marker = "https://reset.example/secret-link-for-the-mail-only"
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker("worker-json")
        response = httpx.post(
            f"{stack.api_url}/v1/events",
            json={"event": "FORGOT_PASSWORD", "contact": {"email": email}, "data": {"forgot_password_link": marker}},
            headers={"Authorization": f"Bearer {tenant.token}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        event_id = response.json()["id"]
        [mail] = wait_until(lambda: sink.to(email) or None, what="the email")
        body = mail.message.get_body()
        assert body is not None
        assert marker in body.get_content()

        log = stack.workdir / "worker-json.log"
        sent = wait_until(
            lambda: [line for line in json_lines(log.read_text()) if line.get("outcome") == "sent"] or None,
            what="the message's log line",
        )
    text = log.read_text()
    lines = json_lines(text)
    [event_line] = [line for line in lines if line.get("event_id") == event_id and "messages" in line]
    assert (event_line["outcome"], event_line["event"], event_line["messages"]) == ("processed", "FORGOT_PASSWORD", 1)
    assert event_line["level"] == "INFO"
    [message_line] = sent
    assert (message_line["event_id"], message_line["smtp_code"], message_line["attempt"]) == (event_id, 250, 1)
    assert message_line["workspace_id"] == event_line["workspace_id"]
    assert marker not in text
    assert tenant.token not in text
    # Celery's own lines share the format.
    assert any(line.get("logger", "").startswith("celery") for line in lines)

"""Each dialect's error envelope, as its clients read it, and a POST route of it: what the tests of its refusals
check an answer against."""

from collections.abc import Callable
from typing import Any


def cocomail(body: Any, status: int) -> bool:
    return set(body) == {"data", "error"} and body["data"] is None and isinstance(body["error"], str)


def altcraft(body: Any, status: int) -> bool:
    return body.keys() == {"data", "error", "error_text"} and body["error"] == status and body["data"] is None


def esputnik(body: Any, status: int) -> bool:
    return body.keys() == {"message", "errors"} and isinstance(body["message"], str)


def bunce(body: Any, status: int) -> bool:
    return body.keys() == {"success", "data", "message", "error"} and body["success"] is False


def emailsendx(body: Any, status: int) -> bool:
    return body.keys() == {"error"} and isinstance(body["error"], str)


# (dialect, a POST route of it, its envelope)
DIALECTS: list[tuple[str, str, Callable[[Any, int], bool]]] = [
    ("cocomail", "/events/trigger", cocomail),
    ("altcraft", "/api/v1.1/campaigns/triggers/start/", altcraft),
    ("esputnik", "/api/v2/event", esputnik),
    ("bunce", "/v1/events/trigger", bunce),
    ("emailsendx", "/api/v1/contacts", emailsendx),
]

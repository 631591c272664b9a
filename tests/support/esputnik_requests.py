"""Requests to a running api's esputnik endpoint, as an esputnik client sends them."""

import base64
import json
from collections.abc import Mapping
from typing import Any

import httpx


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"api:{token}".encode()).decode()}


def post(
    api_url: str, headers: dict[str, str], body: str | Mapping[str, Any], *, version: str = "v2"
) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(
        f"{api_url}/compat/esputnik/api/{version}/event",
        content=content.encode(),
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )

"""What makes a repeat of a keyed event a duplicate: the same key and the same content inside the window.

A key alone is not enough. esputnik's keyValue identifies the contact, so two different events for one contact
share it, and deduping on it alone lost the second one's mail. The api (its Redis claim) and the worker (its
check of recorded events) both compare this digest, so they agree on what a retry is.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# The event's identity rather than its content: the claim's key holds them, the event key case-folded, so
# "ORDER" and "order" with one key are one event.
IDENTITY = frozenset({"workspace_id", "event", "automation_id", "key"})

DEFAULT_DEDUPE_WINDOW_S = 24 * 3600


def content_digest(request: Mapping[str, Any]) -> str:
    """A stable digest of a canonical request (`TriggerRequest.model_dump(mode="json")`) minus its identity.

    Content is everything else the trigger carries: the audience, the contact update, data, field overrides,
    attachments, channel filter and webhook data. The canonical request holds nothing volatile (no receive time,
    no event id), and key order does not count.
    """
    content = {name: value for name, value in request.items() if name not in IDENTITY}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]

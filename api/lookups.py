"""What the ingest path reads of a workspace's set-up, kept for a moment instead of read on every request."""

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from tripmail.audience import field_types
from tripmail.automations import count_matching_automations
from tripmail.events import find_event_type
from tripmail.ids import normalize_key
from tripmail.models import EventType

T = TypeVar("T")


class SetupCache:
    """Event types, matching-automation counts and contact field types per workspace, for `ttl_s` seconds.

    Only the answer and the api's checks read these: a change made by `tripmail apply` shows in them within
    `ttl_s`, and the worker reads the database itself, so what is sent never depends on this cache.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[tuple[object, ...], tuple[float, object]] = {}

    def _cached(self, key: tuple[object, ...], load: Callable[[], T]) -> T:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]  # type: ignore[return-value]
        value = load()
        self._entries[key] = (now + self._ttl_s, value)
        return value

    def event(self, session: Session, workspace_id: int, event: str) -> tuple[EventType | None, int]:
        """The event type of that key (None if it has none yet) and how many active automations it starts."""
        return self._cached(
            ("event", workspace_id, normalize_key(event)),
            lambda: (
                find_event_type(session, workspace_id, event),
                count_matching_automations(session, workspace_id, event),
            ),
        )

    def field_types(self, session: Session, workspace_id: int) -> dict[str, str]:
        return self._cached(("fields", workspace_id), lambda: field_types(session, workspace_id))

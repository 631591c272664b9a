"""What the ingest path reads of tokens and a workspace's set-up, kept for a moment instead of read on every request."""

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

from cachetools import TTLCache
from sqlalchemy.orm import Session, sessionmaker

from tripmail.automations.program import automations_on
from tripmail.contacts.audience import field_types
from tripmail.ids import normalize_key
from tripmail.ingest.event_types import find_event_type
from tripmail.models import EventType

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """Values kept for `ttl_s` seconds after they were read, then read again; at most `max_entries` of them, the
    least recently used dropped first, and those whose time is up dropped as others are put.

    Shared by the event loop and the threadpool: reading an entry reorders the LRU, so every access takes a lock,
    held for a dictionary operation only and never across `load()`. Two threads that miss at once both read, and
    the later write wins, which is no worse than one read. None is never kept (it reads as a miss).
    """

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: TTLCache[K, V] = TTLCache(maxsize=max_entries, ttl=ttl_s, timer=clock)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value kept for `key`, or None when there is none or its time is up."""
        with self._lock:
            return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value

    def drop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def cached(self, key: K, load: Callable[[], V]) -> V:
        """The value kept for `key`, or `load()` kept from now on."""
        value = self.get(key)
        if value is None:
            value = load()
            self.put(key, value)
        return value


class EventSetup(NamedTuple):
    """What the api reads of an event key: its event type (None if it has none yet), how many active automations it
    starts, and whether one of them sends transactional mail (its events then go to the fast lane)."""

    event_type: EventType | None
    matching: int
    transactional: bool


class SetupCache:
    """Event types, their matching automations and contact field types per workspace, for `ttl_s` seconds.

    Only the answer and the api's checks read these: a change made by `tripmail apply` shows in them within
    `ttl_s`, and the worker reads the database itself, so what is sent never depends on this cache. A session
    is opened only on a miss: on the native path a hit is the whole check.

    An event key no event type has yet is kept too (its answer says so): events of a new key, which the worker
    creates, then read the database once per `ttl_s` rather than on every request. A client that sends a stream
    of made-up keys costs a read each, as without the cache, and can only push other entries out of the
    `max_entries`, not grow the process.
    """

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._events: ExpiringCache[tuple[int, str], EventSetup] = ExpiringCache(ttl_s, max_entries, clock)
        self._fields: ExpiringCache[int, dict[str, str]] = ExpiringCache(ttl_s, max_entries, clock)

    def event(self, sessions: sessionmaker[Session], workspace_id: int, event: str) -> EventSetup:
        def load() -> EventSetup:
            with sessions() as session:
                started = automations_on(session, workspace_id, event)
                return EventSetup(
                    find_event_type(session, workspace_id, event),
                    len(started),
                    any(automation.mails_transactional for automation in started),
                )

        return self._events.cached((workspace_id, normalize_key(event)), load)

    def field_types(self, sessions: sessionmaker[Session], workspace_id: int) -> dict[str, str]:
        def load() -> dict[str, str]:
            with sessions() as session:
                return field_types(session, workspace_id)

        return self._fields.cached(workspace_id, load)

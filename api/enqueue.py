"""Claim dedupe keys and publish accepted events, for many concurrent requests at once.

Publishing a Celery task costs api CPU and a claim or hold is a Redis round trip; done once per request they are
most of the cost of ingest (bench/results.md, What the code's shape rests on). The Enqueuer does them once per flush
instead.
"""

import asyncio
import hashlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from redis import Redis
from redis.exceptions import RedisError

from tripmail import queue
from tripmail.errors import KeyReused, TripmailError, Unavailable
from tripmail.ids import new_id, normalize_key
from tripmail.ingest.dedupe import DEFAULT_DEDUPE_WINDOW_S, content_digest
from tripmail.models import EventType
from tripmail.schemas.accepted import Accepted
from tripmail.schemas.trigger import TriggerRequest

log = logging.getLogger(__name__)

CLAIM_UNTIL_QUEUED_S = 60
# A claim holds `?<event id>` until its event is queued, and `<event id>` after. A claim left unconfirmed (its
# enqueue failed while Redis was away, so it could not be given back either) must not make the client's retry a
# duplicate of an event that was never queued: that retry is answered Unavailable until the claim lapses.
UNCONFIRMED = "?"
# A claim's value is `<event id>#<content digest>`: one SET NX GET both claims the key and tells a repeat whether
# it repeats the first event's content. A value without a digest (a claim written without one) counts as the same.
DIGEST_MARK = "#"
# A flush this big means requests come faster than flushes run, so they share flushes without waiting: the next
# flush from rest starts at once. Waiting then would stall every connection of a busy client for wait_s after each
# answer, which costs ingest a share of its requests/s (bench/results.md, What the code's shape rests on).
BUSY_FLUSH_EVENTS = 8
# A full batch request is one flush on its own; the task and the worker's transaction stay the size of one.
MAX_FLUSH_EVENTS = 1000


def dedupe_key(trigger: TriggerRequest, content: str | None = None) -> str:
    """The claim's Redis key: the trigger's key, and its content digest when the key alone names no one event."""
    # Hashed so any keyValue up to 300 characters makes a short, safe Redis key.
    digest = hashlib.sha256(trigger.key.encode() if trigger.key else b"").hexdigest()
    key = f"tripmail:dedupe:{trigger.workspace_id}:{normalize_key(trigger.event_name)}:{digest}"
    return key if content is None else f"{key}:{content}"


def claim_value(event_id: str, content: str) -> str:
    return f"{event_id}{DIGEST_MARK}{content}"


def claimed_by(value: str) -> tuple[str, str | None]:
    """The event id and content digest a claim's value holds (its UNCONFIRMED mark removed)."""
    event_id, _, content = value.removeprefix(UNCONFIRMED).partition(DIGEST_MARK)
    return event_id, content or None


@dataclass(frozen=True)
class Checked:
    """A trigger that passed the api's checks, with what its answer needs."""

    trigger: TriggerRequest
    event_type: EventType | None
    matching: int
    # One of its automations sends transactional mail: it goes to the fast lane.
    transactional: bool
    # True for the native API, where the key is an idempotency key naming one event: the same key with other
    # content is refused (KeyReused). False for esputnik's keyValue, which names the contact: the same key with
    # other content is another event, and only a repeat of the same content is a duplicate.
    key_names_event: bool = True

    @property
    def dedupe_window_s(self) -> int:
        return self.event_type.dedupe_window_s if self.event_type else DEFAULT_DEDUPE_WINDOW_S

    @cached_property
    def request(self) -> dict[str, Any]:
        """The trigger as its task carries it; dumped once, for the task and for the content digest."""
        return self.trigger.model_dump(mode="json")

    @cached_property
    def content(self) -> str:
        return content_digest(self.request)

    @property
    def claim(self) -> str | None:
        """The Redis key that makes a repeat of this trigger's key a duplicate, when it has one."""
        if not self.trigger.key or self.dedupe_window_s <= 0:
            return None
        return dedupe_key(self.trigger, None if self.key_names_event else self.content)


Answer = Accepted | TripmailError


@dataclass(frozen=True)
class _Waiting:
    checked: list[Checked]
    answers: "asyncio.Future[list[Answer]]"


class Enqueuer:
    """Enqueues the checked triggers of concurrent requests together: one claim round trip, one task, one hold.

    It lives on the app's event loop. A request adds its triggers and waits for their answers. One flush runs
    at a time, in a thread of its own, for everything pending when it starts: a request that finds no flush
    under way waits `wait_s` for company (unless the last flush was busy), and the requests that arrive during a
    flush share the next one, so under load a task carries many events and at rest a request waits at most
    `wait_s`.
    """

    def __init__(
        self, store: Redis, celery: Celery, *, wait_s: float = 0.0, max_flush_events: int = MAX_FLUSH_EVENTS
    ) -> None:
        self._store = store
        self._celery = celery
        self._wait_s = wait_s
        self._max_flush_events = max_flush_events
        self._pending: deque[_Waiting] = deque()
        # One thread: flushes never overlap, so each claims, publishes and holds in the order requests came.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enqueue")
        self._flushing: asyncio.Task[None] | None = None
        self._last_flush_events = 0

    async def enqueue(self, checked: list[Checked]) -> list[Answer]:
        """Per trigger, in order: accepted (new or a duplicate of the key's first event), KeyReused, or Unavailable."""
        if not checked:
            return []
        waiting = _Waiting(checked, asyncio.get_running_loop().create_future())
        self._pending.append(waiting)
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_pending())
        return await waiting.answers

    async def close(self) -> None:
        """Finish the flushes under way, then stop the thread."""
        if self._flushing is not None:
            await self._flushing
        self._executor.shutdown(wait=True)

    def _take(self) -> list[_Waiting]:
        """The oldest pending requests, whole, up to `max_flush_events` events (at least one request)."""
        taken = [self._pending.popleft()]
        events = len(taken[0].checked)
        while self._pending and events + len(self._pending[0].checked) <= self._max_flush_events:
            taken.append(self._pending.popleft())
            events += len(taken[-1].checked)
        return taken

    async def _flush_pending(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # A flush that starts from rest waits `wait_s` for more requests to share it, unless the last one was
            # busy; later ones already had the previous flush's time to gather.
            if self._last_flush_events < BUSY_FLUSH_EVENTS:
                await asyncio.sleep(self._wait_s)
            while self._pending:
                taken = self._take()
                items = [item for waiting in taken for item in waiting.checked]
                self._last_flush_events = len(items)
                try:
                    answers = await loop.run_in_executor(self._executor, enqueue_once, self._store, self._celery, items)
                except Exception as exc:
                    # Not an outage (enqueue_once answers those): a bug, raised in every request of the flush
                    # rather than leaving them waiting forever.
                    for waiting in taken:
                        if not waiting.answers.done():
                            waiting.answers.set_exception(exc)
                    continue
                start = 0
                for waiting in taken:
                    end = start + len(waiting.checked)
                    if not waiting.answers.done():  # done: its request was cancelled (client gone)
                        waiting.answers.set_result(answers[start:end])
                    start = end
        finally:
            self._flushing = None


def enqueue_once(store: Redis, celery: Celery, checked: list[Checked]) -> list[Answer]:
    """Claim each key, enqueue the triggers that are not duplicates in one task per lane, then hold the claims.

    A task holds one lane's triggers only: a transactional event in the task of a marketing one would wait with it
    in the bulk lane, or make the fast lane record it.
    """
    event_ids = [new_id() for _ in checked]
    claims = [item.claim for item in checked]
    down = Unavailable("the queue (Redis) is not reachable; nothing was accepted, retry later")
    unconfirmed = Unavailable(
        "an earlier request with this key is not confirmed queued (the queue was unreachable); retry later"
    )
    try:
        firsts = _claim_keys(store, claims, event_ids, checked)
    except RedisError:
        return [down for _ in checked]
    answers: list[Answer] = []
    queued: dict[bool, list[tuple[str, dict[str, Any]]]] = {True: [], False: []}  # by lane: transactional or not
    held: list[tuple[str, str, int]] = []
    this_flush = set(event_ids)
    for item, event_id, claim, first in zip(checked, event_ids, claims, firsts, strict=True):
        first_id, first_content = claimed_by(first) if first is not None else (None, None)
        if first is not None and first.startswith(UNCONFIRMED) and first_id not in this_flush:
            # The key's first event is not known to be queued: its enqueue is under way elsewhere, or it failed
            # and Redis was away when its claim should have been given back. Either way, not a duplicate yet.
            answers.append(unconfirmed)
            continue
        if first_id is not None and first_content not in (None, item.content):
            answers.append(_key_reused(item, first_id))
            continue
        if first_id is not None:
            answers.append(Accepted(id=first_id, duplicate=True, matching_automations=item.matching))
            continue
        answers.append(Accepted(id=event_id, matching_automations=item.matching))
        queued[item.transactional].append((event_id, item.request))
        if claim is not None:
            held.append((claim, claim_value(event_id, item.content), item.dedupe_window_s))
    lost: set[str] = set()
    for transactional in (True, False):  # the fast lane's first
        pairs = queued[transactional]
        if not pairs:
            continue
        if lost:  # Redis refused the other lane's task a moment ago: not this one's too, after another timeout
            lost |= {event_id for event_id, _ in pairs}
            continue
        try:
            celery.send_task(
                queue.PROCESS_EVENTS,
                args=[pairs],
                argsrepr=queue.describe(queue.PROCESS_EVENTS, [pairs]),
                queue=queue.queue_for(transactional=transactional),
            )
        except OperationalError:
            lost |= {event_id for event_id, _ in pairs}
    if lost:
        _release(store, [claim for claim in held if claimed_by(claim[1])[0] in lost])
        held = [claim for claim in held if claimed_by(claim[1])[0] not in lost]
        # A duplicate of an event of this flush that was not queued is not accepted either, nor refused for it.
        answers = [down if _names_one_of(answer, lost) else answer for answer in answers]
    _hold_for_window(store, held)
    return answers


def _key_reused(item: Checked, first_id: str) -> KeyReused:
    return KeyReused(
        f"key {item.trigger.key!r} was used by event {first_id} with different content inside the dedupe window "
        f"({item.dedupe_window_s} s): nothing was sent again; a retry must repeat the first body, a new event "
        "needs a new key",
        first_event_id=first_id,
    )


def _names_one_of(answer: Answer, event_ids: set[str]) -> bool:
    if isinstance(answer, Accepted):
        return answer.id in event_ids
    return isinstance(answer, KeyReused) and answer.first_event_id in event_ids


# SET NX GET EX, then EXPIRE, for each key of a flush in one command each, instead of a pipeline of one command
# per key: redis-py packs and parses every command in Python, which costs the api's flush far more CPU per key
# (bench/results.md, What the code's shape rests on).
# A key this call set answers '' (a Lua list cannot hold nil).
_CLAIM = """
local firsts = {}
for i, key in ipairs(KEYS) do
  firsts[i] = redis.call('SET', key, ARGV[2 * i - 1], 'NX', 'GET', 'EX', ARGV[2 * i]) or ''
end
return firsts
"""
# Confirms each claim this flush still holds (its event is queued) and keeps it for the event type's window.
_HOLD = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == '?' .. ARGV[2 * i - 1] then
    redis.call('SET', key, ARGV[2 * i - 1], 'EX', ARGV[2 * i])
  end
end
"""


def _claim_keys(
    store: Redis, claims: list[str | None], event_ids: list[str], checked: list[Checked]
) -> list[str | None]:
    """SET NX GET for every key in one round trip: None where this item got the key, else the value of the
    key's first claim (see claimed_by).

    Held briefly until the enqueue succeeds, then for the whole window: an api that dies in between leaves a
    claim that lapses, so the client's retry is not refused as a duplicate of nothing. Two items of one flush
    with the same key (of one batch or of two requests): the second gets the first's value.
    """
    keys: list[str] = []
    args: list[str | int] = []
    for claim, event_id, item in zip(claims, event_ids, checked, strict=True):
        if claim is not None:
            keys.append(claim)
            args += [UNCONFIRMED + claim_value(event_id, item.content), min(item.dedupe_window_s, CLAIM_UNTIL_QUEUED_S)]
    if not keys:
        return [None] * len(claims)
    replies = iter(store.register_script(_CLAIM)(keys=keys, args=args))
    return [(next(replies) or None) if claim is not None else None for claim in claims]


def _hold_for_window(store: Redis, held: list[tuple[str, str, int]]) -> None:
    if not held:
        return
    try:
        args = [value for _, claimed, window in held for value in (claimed, window)]
        store.register_script(_HOLD)(keys=[claim for claim, _, _ in held], args=args)
    except RedisError:
        # The events are queued, their claims unconfirmed: a repeat is answered Unavailable until the short claim
        # lapses, and after that is still caught by the worker's check.
        log.warning("could not extend %d dedupe key(s) to their window", len(held))


def _release(store: Redis, held: list[tuple[str, str, int]]) -> None:
    """Give the keys back, so the client's retry is not answered as a duplicate of events never queued."""
    for claim, claimed, _window in held:
        try:
            if store.get(claim) == UNCONFIRMED + claimed:
                store.delete(claim)
        except RedisError:
            log.warning("could not release dedupe key %s after a failed enqueue", claim)

"""A per-token budget of requests, kept in Redis so that every api process and instance draws on the same one.

GCRA (the generic cell rate algorithm: a token bucket kept as one timestamp per key). Each request moves the key's
due time on by its cost times the interval the rate allows between requests, and is refused when that would put
the due time more than a burst's worth ahead of now. One key per token, one round trip per request, and a refusal
knows exactly when the request would fit.
"""

import math
import time
from collections.abc import Callable

from fastapi import Request
from redis import Redis
from redis.exceptions import RedisError

from tripmail.errors import PayloadTooLarge, RateLimited
from tripmail.setup.tokens import revoked_key

# In milliseconds. A refused request changes nothing: a client retrying too early does not push its own wait back.
# The key lapses once its due time has passed, when it would read as a fresh key anyway. KEYS[2], when given, is a
# token's revocation marker (tripmail.setup.tokens.revoked_key): checked in the same round trip, and a revoked token's
# request (-1) is not charged.
_REVOKED = -1
_CHARGE = """
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local now, interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local due = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local next_due = due + cost * interval
local wait = next_due - now - burst * interval
if wait > 0 then
  return math.ceil(wait)
end
redis.call('SET', KEYS[1], string.format('%.3f', next_due), 'PX', math.ceil(next_due - now))
return 0
"""


def token_key(token_id: int) -> str:
    # The token's row id, never its secret or the secret's hash.
    return f"tripmail:rate:token:{token_id}"


def link_key(automation_id: int) -> str:
    """altcraft v1.0 links carry no token: the link, a secret of its campaign, is the credential that is limited."""
    return f"tripmail:rate:link:{automation_id}"


SKIP_AFTER_REDIS_ERROR_S = 1.0


class RedisPause:
    """After Redis failed to answer, the per-request checks (rate limit, revocation) skip it for a second.

    They run on the event loop, so while Redis hangs each one held every request of the process for the client's
    timeout: without the pause, the tenth of ten concurrent requests waited ten timeouts.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0

    @property
    def active(self) -> bool:
        return self._clock() < self._until

    def begin(self) -> None:
        self._until = self._clock() + SKIP_AFTER_REDIS_ERROR_S


class RateLimiter:
    """`per_minute` requests per key, of which `burst` (a minute's worth unless given) may come at once."""

    def __init__(
        self,
        store: Redis,
        *,
        per_minute: int,
        burst: int | None = None,
        pause: RedisPause | None = None,
    ) -> None:
        self.per_minute = per_minute
        self.burst = burst or per_minute
        self._interval_ms = 60_000 / per_minute
        self._charge = store.register_script(_CHARGE)
        self._pause = pause or RedisPause()

    def charge(self, key: str, cost: int = 1, *, now: float, charged: int = 0) -> None:
        """Take `cost` requests from the key's budget at `now` (seconds since the epoch), or raise RateLimited.

        `charged`: what the same request was charged already (a batch's first event, when it was authenticated).
        """
        self._charge_unless_revoked(key, None, cost, now=now, charged=charged)

    def charge_token(self, token_id: int, *, now: float) -> bool:
        """Take one request from the token's budget, or raise RateLimited; True, and nothing taken, when the token
        was revoked (`tripmail token revoke`) in the last `revoked_marker_s` seconds. One round trip for both."""
        return self._charge_unless_revoked(token_key(token_id), revoked_key(token_id), 1, now=now, charged=0)

    def _charge_unless_revoked(self, key: str, marker: str | None, cost: int, *, now: float, charged: int) -> bool:
        if charged + cost > self.burst:
            # It would never fit, so a 429 would send the client back again and again.
            raise PayloadTooLarge(
                f"{charged + cost} events in one request are more than the {self.burst} a token may send at once; "
                "send them in smaller batches",
                field="events",
            )
        if self._pause.active:
            return False
        try:
            wait_ms = self._charge(
                keys=[key] if marker is None else [key, marker], args=[now * 1000, self._interval_ms, self.burst, cost]
            )
        except RedisError:
            # Fail open: the limit guards against floods, not correctness. An event cannot be queued while Redis is
            # down, so the enqueue answers 503 for it anyway; refusing here too would also take down what needs no
            # Redis (the event history, template previews). A revoked token is then refused once its cache entry
            # lapses (setup_cache_s), as the database says.
            self._pause.begin()
            return False
        if wait_ms == _REVOKED:
            return True
        if wait_ms:
            retry_after_s = math.ceil(wait_ms / 1000)
            raise RateLimited(
                f"the limit is {self.per_minute} requests a minute per token (a batch counts one per event), "
                f"{self.burst} at once; retry in {retry_after_s} s",
                retry_after_s=retry_after_s,
            )
        return False


def charge_budget(request: Request, key: str, cost: int = 1, *, charged: int = 0) -> None:
    """Charge the request to `key` when the api limits requests (TRIPMAIL_RATE_LIMIT_PER_MINUTE above 0).

    The clock is the api host's: every instance that shares the Redis must keep time (NTP), as a host that runs
    ahead grants its requests budget a little early.
    """
    limiter: RateLimiter | None = request.app.state.limiter
    if limiter is not None and cost > 0:
        limiter.charge(key, cost, now=time.time(), charged=charged)


# With no rate limit there is no script to fold the revocation check into. An EXISTS on the event loop per request
# costs ingest a large share of its requests/s (bench/results.md, What the code's shape rests on), so each process
# looks a token up at most this often: a revocation takes effect within it.
REVOCATION_RECHECK_S = 0.05


class RevocationMarkers:
    """Whether a token was revoked lately (`tripmail token revoke`), for an api that does not limit requests."""

    def __init__(self, store: Redis, pause: RedisPause, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._pause = pause
        self._clock = clock
        self._checked_at: dict[int, float] = {}

    def revoked(self, token_id: int) -> bool:
        if self._pause.active:
            return False
        now = self._clock()
        checked_at = self._checked_at.get(token_id)
        if checked_at is not None and now - checked_at < REVOCATION_RECHECK_S:
            return False
        try:
            revoked = bool(self._store.exists(revoked_key(token_id)))
        except RedisError:
            self._pause.begin()
            return False
        if not revoked:
            self._checked_at[token_id] = now
        return revoked


def charge_token(request: Request, token_id: int) -> bool:
    """Charge one request to the token when the api limits requests, and tell whether it was revoked lately.

    The marker's EXISTS is folded into the rate limit's script (still one round trip); with no limit it is
    looked up at most every REVOCATION_RECHECK_S per token and process. With Redis unreachable, False (fail open,
    as the limit does).
    """
    limiter: RateLimiter | None = request.app.state.limiter
    if limiter is not None:
        return limiter.charge_token(token_id, now=time.time())
    markers: RevocationMarkers = request.app.state.revocations
    return markers.revoked(token_id)

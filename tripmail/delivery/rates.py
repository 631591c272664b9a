"""Send rates per relay and per recipient domain, counted in Redis so every worker process and machine draws on
one budget: a relay's contract (100 messages a second) or a mailbox provider's patience (gmail.com) holds however
many workers send.

Rates are written as the `limits` library reads them: `100/second`, `6000/minute`, `10/second;300/minute`.
"""

import asyncio
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

# The longest one look waits before it asks again: another worker may have freed a place meanwhile.
LONGEST_WAIT_S = 1.0
# Every domain without a rate of its own gets this one's, counted for each domain apart.
ANY_DOMAIN = "*"


def parse_rate(text: str) -> list[RateLimitItem]:
    """`100/second` or several separated by `;`; ValueError names what was wrong."""
    try:
        return parse_many(text)
    except ValueError as exc:
        raise ValueError(f"rate {text!r} is not like 100/second or 10/second;300/minute") from exc


def parse_domain_rates(text: str) -> dict[str, list[RateLimitItem]]:
    """`gmail.com=20/second, *=100/second` (commas or spaces between entries); the rates by lower-cased domain."""
    rates = {}
    for entry in text.replace(",", " ").split():
        domain, equals, rate = entry.partition("=")
        if not (domain and equals and rate):
            raise ValueError(f"domain rate {entry!r} is not like gmail.com=20/second")
        rates[domain.strip().lower()] = parse_rate(rate)
    return rates


class SendRates:
    """Waits, before each message, until its relay and its recipient's domain may take one more.

    A moving window: exact, so a relay promised 100 a second never sees 101 in any second, at the cost of a
    Redis call per message and limit (the counting runs off the sending loop, in a thread).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        relays: Mapping[str, list[RateLimitItem]],
        domains: Mapping[str, list[RateLimitItem]],
    ) -> None:
        self._limiter = MovingWindowRateLimiter(RedisStorage(redis_url, key_prefix="tripmail-rates"))
        self._relays = relays
        self._domains = domains

    async def relay_turn(self, relay: str) -> None:
        for item in self._relays.get(relay, ()):
            await self._take(item, "relay", relay)

    async def domain_turn(self, recipient: str) -> None:
        domain = recipient.rpartition("@")[2].lower()
        for item in self._domains.get(domain, self._domains.get(ANY_DOMAIN, ())):
            await self._take(item, "domain", domain)

    async def _take(self, item: RateLimitItem, *key: str) -> None:
        while not await asyncio.to_thread(self._limiter.hit, item, *key):
            reset_at, _ = await asyncio.to_thread(self._limiter.get_window_stats, item, *key)
            await asyncio.sleep(min(LONGEST_WAIT_S, max(0.01, reset_at - time.time())))

"""The per-token budget (api/ratelimit.py), run as the Lua script it is against fakeredis, on a clock of the test's."""

import fakeredis
import pytest

from api.ratelimit import SKIP_AFTER_REDIS_ERROR_S, RateLimiter, RedisPause, token_key
from tripmail.errors import PayloadTooLarge, RateLimited
from tripmail.setup.tokens import revoked_key

T0 = 1_800_000_000.0
A, B = token_key(1), token_key(2)


def limiter(per_minute: int, burst: int | None = None) -> RateLimiter:
    return RateLimiter(fakeredis.FakeRedis(), per_minute=per_minute, burst=burst)


def retry_after(limits: RateLimiter, key: str, cost: int = 1, *, now: float) -> int:
    with pytest.raises(RateLimited) as refused:
        limits.charge(key, cost, now=now)
    return refused.value.retry_after_s


def test_a_burst_passes_at_once_and_the_next_request_waits_one_interval() -> None:
    limits = limiter(per_minute=60)  # one a second, 60 at once
    for _ in range(60):
        limits.charge(A, now=T0)
    assert retry_after(limits, A, now=T0) == 1
    assert retry_after(limits, A, now=T0 + 0.999) == 1
    limits.charge(A, now=T0 + 1.0)
    assert retry_after(limits, A, now=T0 + 1.0) == 1


def test_retry_after_is_the_whole_seconds_until_the_request_fits() -> None:
    limits = limiter(per_minute=6, burst=2)  # one per 10 s, 2 at once
    limits.charge(A, now=T0)
    limits.charge(A, now=T0)
    assert retry_after(limits, A, now=T0) == 10
    assert retry_after(limits, A, now=T0 + 4.5) == 6  # 5.5 s rounded up: never early
    limits.charge(A, now=T0 + 10)


def test_a_refused_request_costs_nothing() -> None:
    limits = limiter(per_minute=6, burst=2)
    limits.charge(A, 2, now=T0)
    for _ in range(5):
        assert retry_after(limits, A, now=T0 + 1) == 9
    limits.charge(A, now=T0 + 10)


def test_each_token_has_a_budget_of_its_own() -> None:
    limits = limiter(per_minute=60, burst=3)
    limits.charge(A, 3, now=T0)
    assert retry_after(limits, A, now=T0) == 1
    limits.charge(B, 3, now=T0)
    assert retry_after(limits, B, now=T0) == 1


def test_a_batch_counts_one_request_per_event() -> None:
    limits = limiter(per_minute=600, burst=100)  # one per 100 ms
    limits.charge(A, 60, now=T0)
    # 60 + 50 is 10 over: 10 intervals, a second, before the batch fits; a batch that fits still passes.
    assert retry_after(limits, A, 50, now=T0) == 1
    limits.charge(A, 40, now=T0)
    assert retry_after(limits, A, now=T0) == 1
    limits.charge(A, 50, now=T0 + 5)


def test_a_batch_larger_than_the_burst_is_refused_as_too_large() -> None:
    limits = limiter(per_minute=600, burst=100)
    with pytest.raises(PayloadTooLarge, match="101 events"):
        limits.charge(A, 101, now=T0)
    with pytest.raises(PayloadTooLarge, match="101 events"):
        limits.charge(A, 100, now=T0, charged=1)  # a batch's rest, its first charged at authentication
    limits.charge(A, 100, now=T0)


def test_the_key_lapses_once_the_budget_is_whole_again() -> None:
    store = fakeredis.FakeRedis()
    limits = RateLimiter(store, per_minute=60)
    limits.charge(A, 5, now=T0)
    assert 4_000 < store.pttl(A) <= 5_000


def test_with_redis_down_requests_pass() -> None:
    server = fakeredis.FakeServer()
    limits = RateLimiter(fakeredis.FakeRedis(server=server), per_minute=60, burst=1)
    limits.charge(A, now=T0)
    server.connected = False
    for _ in range(3):
        limits.charge(A, now=T0)


def test_after_redis_fails_the_limit_goes_unchecked_for_a_second_then_holds_again() -> None:
    server = fakeredis.FakeServer()
    clock = [0.0]
    pause = RedisPause(clock=lambda: clock[0])
    limits = RateLimiter(fakeredis.FakeRedis(server=server), per_minute=60, burst=1, pause=pause)
    limits.charge(A, now=T0)
    server.connected = False
    limits.charge(A, now=T0)
    server.connected = True
    # Redis answers again, but a hung one would hold the event loop a timeout per request: not asked yet.
    clock[0] = SKIP_AFTER_REDIS_ERROR_S - 0.01
    limits.charge(A, now=T0)
    clock[0] = SKIP_AFTER_REDIS_ERROR_S
    assert retry_after(limits, A, now=T0) == 1


def test_a_revoked_token_is_told_in_the_same_script_and_charged_nothing() -> None:
    store = fakeredis.FakeRedis()
    limits = RateLimiter(store, per_minute=60, burst=2)
    assert limits.charge_token(1, now=T0) is False
    store.set(revoked_key(1), 1, ex=60)
    for _ in range(5):
        assert limits.charge_token(1, now=T0) is True
    assert float(store.get(A) or 0) == pytest.approx(T0 * 1000 + 1000)  # still the one request charged before
    # Another token's marker is not this one's, and the limit still holds for a live token.
    assert limits.charge_token(2, now=T0) is False
    assert limits.charge_token(2, now=T0) is False
    with pytest.raises(RateLimited):
        limits.charge_token(2, now=T0)


def test_with_redis_down_a_token_reads_as_not_revoked() -> None:
    server = fakeredis.FakeServer()
    store = fakeredis.FakeRedis(server=server)
    limits = RateLimiter(store, per_minute=60)
    store.set(revoked_key(1), 1)
    server.connected = False
    assert limits.charge_token(1, now=T0) is False

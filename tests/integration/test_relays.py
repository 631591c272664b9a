"""Several relays: failover to the next one when a relay is unreachable or defers a message before its DATA (never
after), weights that split the mail, and send rates per relay and per recipient domain that every worker shares."""

import time
from collections import Counter

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.event_posts import post_reset
from tests.support.message_states import workspace_messages_settled
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.smtp_sink import Sink, running_sink
from tests.support.stack import OwnStack
from tripmail.config import Settings
from tripmail.delivery.smtp import RELAY_REST_S
from tripmail.models import Message, MessageAttempt


class DeferringRecipients(Sink):
    """A relay that defers every recipient (greylisting, a full queue): a 4xx before DATA."""

    def __init__(self) -> None:
        super().__init__()
        self.deferred: Counter[str] = Counter()

    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: object
    ) -> str:
        self.deferred[address] += 1
        return "451 4.7.1 greylisted, try again later"


class DeferringData(Sink):
    """A relay that takes the message's content, then defers it: a 4xx after DATA."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        await super().handle_DATA(server, session, envelope)  # kept, to show what reached this relay
        return "451 4.3.0 queue full after data"


@pytest.fixture
def relay_ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def relay_setup(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings a test parametrizes indirectly; `{first}` and `{second}` in them are the two relays' ports."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def own_settings(own_settings: Settings, relay_ports: tuple[int, int], relay_setup: dict[str, str]) -> Settings:
    """By default relay A first, and relay B, weight 0, taking only what A cannot."""
    first, second = relay_ports
    changes = {"smtp_url": "smtp://127.0.0.1:{first} smtp://127.0.0.1:{second}?weight=0"} | relay_setup
    update: dict[str, object] = {name: value.format(first=first, second=second) for name, value in changes.items()}
    update["smtp_url"] = SecretStr(str(update["smtp_url"]))
    return own_settings.model_copy(update=update)


def relays_of(db: sessionmaker[Session], emails: list[str]) -> Counter[str | None]:
    with db() as session:
        return Counter(session.scalars(select(Message.relay).where(Message.to_address.in_(emails))))


@pytest.mark.timeout(180)
def test_a_relay_deferring_before_data_or_down_passes_its_mail_to_the_next_one(
    stack: OwnStack, relay_ports: tuple[int, int]
) -> None:
    first, second = relay_ports
    tenant = stack.tenant("failover")
    stack.start_worker()
    deferring, down, healthy = ([f"{tenant.key}-{part}-{index}@example.com" for index in range(8)] for part in "abc")

    with running_sink(second) as backup:
        greylisting = DeferringRecipients()
        with running_sink(first, greylisting):
            for email in deferring:
                post_reset(stack.api_url, tenant.token, email)
            wait_until(
                lambda: workspace_messages_settled(stack.db, tenant.key, 8), what="mail sent while relay A defers"
            )
        # Each was offered to relay A first, deferred there, and taken by B in the same attempt.
        assert greylisting.deferred == Counter(deferring)
        assert backup.recipients_from(tenant.sender) == dict.fromkeys(deferring, 1)
        assert relays_of(stack.db, deferring) == {f"127.0.0.1:{second}": 8}

        for email in down:
            post_reset(stack.api_url, tenant.token, email)
        wait_until(lambda: workspace_messages_settled(stack.db, tenant.key, 16), what="mail sent while relay A is down")
        assert backup.recipients_from(tenant.sender) == dict.fromkeys(deferring + down, 1)
        assert relays_of(stack.db, down) == {f"127.0.0.1:{second}": 8}

        # A relay that could not be reached rests before it is offered mail first again.
        time.sleep(RELAY_REST_S)
        with running_sink(first) as primary:
            for email in healthy:
                post_reset(stack.api_url, tenant.token, email)
            final = wait_until(
                lambda: workspace_messages_settled(stack.db, tenant.key, 24), what="mail sent through relay A"
            )
        assert primary.recipients_from(tenant.sender) == dict.fromkeys(healthy, 1)
        assert relays_of(stack.db, healthy) == {f"127.0.0.1:{first}": 8}
    assert final == {"sent": 24}
    assert backup.recipients_from(tenant.sender) == dict.fromkeys(deferring + down, 1)


@pytest.mark.timeout(180)
def test_a_deferral_after_data_stays_with_its_relay_and_is_tried_again_there(
    stack: OwnStack, relay_ports: tuple[int, int]
) -> None:
    first, second = relay_ports
    tenant = stack.tenant("afterdata")
    email = f"{tenant.key}@example.com"
    stack.start_worker()
    stack.start_scheduler()

    def tried_at_a() -> list[tuple[str, str | None, int | None]] | None:
        with stack.db() as session:
            rows = session.execute(select(MessageAttempt.outcome, MessageAttempt.relay, MessageAttempt.smtp_code)).all()
        return [(outcome, relay, code) for outcome, relay, code in rows] if len(rows) >= 2 else None

    with running_sink(second) as backup:
        with running_sink(first, DeferringData()) as deferring:
            post_reset(stack.api_url, tenant.token, email)
            attempts = wait_until(tried_at_a, what="two deferred tries at relay A")
            # Relay A had the content: offering it to B too could deliver it twice.
            assert backup.to(email) == []
            assert len(deferring.to(email)) >= 2
        assert set(attempts) == {("transient", f"127.0.0.1:{first}", 451)}
        with running_sink(first) as primary:
            final = wait_until(
                lambda: workspace_messages_settled(stack.db, tenant.key, 1), what="the message sent at last"
            )
            assert len(primary.to(email)) == 1
    assert final == {"sent": 1}
    assert backup.to(email) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "relay_setup", [{"smtp_url": "smtp://127.0.0.1:{first}?weight=3 smtp://127.0.0.1:{second}?weight=1"}], indirect=True
)
def test_weights_split_the_mail_between_relays(stack: OwnStack, relay_ports: tuple[int, int]) -> None:
    first, second = relay_ports
    with running_sink(first) as heavy, running_sink(second) as light:
        tenant = stack.tenant("weights")
        emails = [f"{tenant.key}-{index}@example.com" for index in range(120)]
        stack.start_worker()
        for email in emails:
            post_reset(stack.api_url, tenant.token, email)
        final = wait_until(
            lambda: workspace_messages_settled(stack.db, tenant.key, len(emails)), what="120 messages sent"
        )
        shares = Counter(
            {"heavy": len(heavy.from_sender(tenant.sender)), "light": len(light.from_sender(tenant.sender))}
        )
        by_relay = relays_of(stack.db, emails)
    assert final == {"sent": 120}
    assert sum(shares.values()) == 120
    # 3 to 1 by weight: 90 expected at the heavy relay; fewer than 61 there would be six standard deviations off.
    assert shares["heavy"] > 60 and shares["light"] > 0
    assert by_relay == {f"127.0.0.1:{first}": shares["heavy"], f"127.0.0.1:{second}": shares["light"]}


def longest_burst(arrivals: list[float], window_s: float) -> int:
    """The most arrivals within any `window_s` seconds."""
    times = sorted(arrivals)
    return max(
        (sum(1 for later in times[index:] if later - start < window_s) for index, start in enumerate(times)), default=0
    )


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "relay_setup",
    [{"smtp_url": "smtp://127.0.0.1:{first}?rate=6/second", "send_domain_rates": "slow.example=3/second"}],
    indirect=True,
)
def test_send_rates_per_relay_and_per_domain_hold_across_workers(stack: OwnStack, relay_ports: tuple[int, int]) -> None:
    first, _ = relay_ports
    with running_sink(first) as sink:
        tenant = stack.tenant("rates")
        slow = [f"{tenant.key}-{index}@slow.example" for index in range(12)]
        other = [f"{tenant.key}-{index}@example.com" for index in range(24)]
        # Two workers of two processes each: the rates are counted in Redis, not per process.
        stack.start_worker("worker-1")
        stack.start_worker("worker-2")
        for email in slow + other:
            post_reset(stack.api_url, tenant.token, email)
        final = wait_until(
            lambda: workspace_messages_settled(stack.db, tenant.key, len(slow) + len(other)),
            timeout=120,
            what="all sent",
        )
        mail = sink.from_sender(tenant.sender)
    assert final == {"sent": 36}
    everything = [received.arrived_at for received in mail]
    to_slow = [received.arrived_at for received in mail if received.rcpt_tos[0].endswith("@slow.example")]
    # A moving window: at most 6 (3 to slow.example) in any second. Arrivals follow the counted moments by a
    # varying few milliseconds, so bursts are read over half a second, and the whole run's length from below.
    assert longest_burst(everything, 0.5) <= 6
    assert longest_burst(to_slow, 0.5) <= 3
    assert max(everything) - min(everything) >= (36 - 6) / 6 - 0.5
    assert max(to_slow) - min(to_slow) >= (12 - 3) / 3 - 0.5

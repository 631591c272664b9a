"""The one reader of TRIPMAIL_* variables."""

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

import phonenumbers
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tripmail.bounces.providers.signatures import load_sendgrid_key
from tripmail.delivery.rates import parse_domain_rates
from tripmail.durations import parse_duration
from tripmail.webhooks.egress import Network, parse_networks

# What deploy/k8s/secret.yaml ships in place of each password and key: a process that finds it left in any setting
# refuses to start, rather than run with a password everyone who read the repository knows.
PLACEHOLDER = "CHANGE-ME"


class Settings(BaseSettings):
    """Read from TRIPMAIL_* or .env; the defaults run on a laptop with no set-up."""

    model_config = SettingsConfigDict(env_prefix="TRIPMAIL_", env_file=".env", extra="ignore", frozen=True)

    database_url: str = "sqlite:///var/tripmail.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # One relay, or several separated by spaces or commas: see tripmail.delivery.smtp.parse_relays.
    smtp_url: SecretStr = SecretStr("smtp://127.0.0.1:1025")
    # Send rates per recipient domain, shared by every worker: `gmail.com=20/second *=100/second` (`*`: each other
    # domain on its own). Empty: none.
    send_domain_rates: str = ""
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    smtp_connections: int = Field(default=4, ge=1, le=64)
    mail_dir: Path = Path("var/mail")
    # Above the longest task (bounded by task_time_limit_s) so Redis never hands a running task to a second worker.
    visibility_timeout_s: int = Field(default=3600, ge=10)
    task_time_limit_s: int = Field(default=600, ge=5)
    # The longest a task waits before trying again after the database or Redis was unreachable (or SQLite's write
    # lock stayed taken); it tries again for as long as that lasts, waiting up to 1, 2, 4, ... seconds (random
    # within each, so many tasks spread out) and then up to this much (see retry_wait_max_s).
    retry_backoff_max_s: int = Field(default=60, ge=1)
    # How long a SQLite writer waits for the write lock another process holds before its statement fails and its
    # task is tried again later (retry_backoff_max_s). PostgreSQL is not affected.
    sqlite_lock_wait_s: float = Field(default=30.0, gt=0)
    send_batch_size: int = Field(default=250, ge=1, le=10_000)
    # The waits before the next try of a message that failed transiently (a 4xx, a relay down or too slow), after
    # its first, second, ... failure; the last one repeats until `send_give_up_after`, then the message is failed.
    send_retry_schedule: str = "1m,5m,15m,1h"
    # How long after its first transient failure a message is still tried (a duration: 3d, 72h, or seconds).
    send_give_up_after: int = Field(default=3 * 86400, ge=0)
    attachment_max_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    # The largest request body the api reads; a larger one is refused (413) before it is parsed. Attachments
    # arrive as base64 (4/3 of their size): the 10 MiB default is 13.4 MiB of body, and the rest of a trigger
    # or a batch of 1,000 events fits in what is left of 16 MiB.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    # The most the api reads of a body before its sender is known, on a route whose credential is not in a header
    # or the query string (the unsubscribe link's token is in its path): a route with a header token checks it
    # before it reads a byte of the body. Larger is refused (413) unread.
    preauth_max_body_bytes: int = Field(default=64 * 1024, ge=1)
    # The same for altcraft, whose v1.1 token is in the JSON body and whose v1.0 link is checked once the body is
    # read: everyone may make the api read and parse this much (off the event loop, and the worst JSON costs far more
    # CPU and memory than its size: bench/results.md, What the code's shape rests on). Large enough for an audience
    # query at the largest budget (25,000 list items), and it bounds altcraft's attachments (1 MiB of body: about
    # 750 KiB of files); raise it to send larger ones.
    altcraft_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    # How long rendering one part of a message (or a preview) may take; a template that loops longer fails with a
    # reason rather than hold a worker.
    render_timeout_s: float = Field(default=2.0, gt=0)
    # The most conditions and list items in all (each value of an $in counts one) an audience query may hold
    # (altcraft's custom_request); a larger one is refused at the api (400). At most
    # tripmail.contacts.audience.MAX_TERMS, what the databases bind to one statement.
    query_max_terms: int = Field(default=25_000, ge=1, le=25_000)
    # How long the api reuses what it read of a workspace's event types, automations and fields (apply shows
    # in its answers after at most this long; the worker always reads the database).
    setup_cache_s: float = Field(default=2.0, ge=0)
    # How many entries each of the api's lookups keeps (event keys, workspaces' field types, live tokens): past
    # it, the least recently used is dropped, so a stream of new event names cannot grow the process.
    lookup_cache_entries: int = Field(default=4096, ge=1)
    # How long the api holds an accepted event for others to join its task, when none is being enqueued already.
    # A task's fixed cost (its transactions, its SMTP hand-over commits) is then shared by the events of those
    # milliseconds: a task per event, at a steady stream of one-event requests, is more than the worker processes
    # keep up with (bench/results.md, What the code's shape rests on).
    enqueue_wait_s: float = Field(default=0.02, ge=0, le=1)
    # How long the api waits for an answer from Redis before it takes Redis for down: a request that needs Redis
    # then gets its 503 within about twice this (a hung Redis would otherwise hold every request for the
    # socket's 30 s), and one that does not is slowed by at most this once a second.
    api_redis_timeout_s: float = Field(default=0.5, gt=0, le=5)
    # A task published this long ago that Redis neither queues nor has a worker holding is taken for lost (see
    # tripmail/queue/ledger.py) and published again by `tripmail scheduler`, which looks every quarter of this.
    task_lost_after_s: float = Field(default=60.0, gt=0)
    # How often `tripmail scheduler` looks for runs whose wait is over: a wait ends up to this much late.
    scheduler_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Where recipients reach the api from outside: the unsubscribe links in marketing mail point here.
    public_url: str = "http://127.0.0.1:8000"
    # Unset: each message's envelope sender (MAIL FROM) is the workspace's sender. Set: it is a signed VERP address
    # at this domain (tripmail/delivery/verp.py), whose MX leads to `tripmail bounces`, so late bounces find their
    # message.
    bounce_domain: str | None = None
    # Unset: a phone number is read only in international format. Set to a region (UA, US): esputnik's phone and
    # contactJson.sms may also be local numbers of it (050 123 45 67), as shops in one country send them.
    phone_default_region: str | None = None
    # Mailgun's webhook signing key: set, POST /v1/bounce-webhooks/mailgun refuses an event whose signature does not
    # verify with it (on top of the Tripmail token every provider webhook needs).
    mailgun_signing_key: SecretStr | None = None
    # The Signed Event Webhook's verification key as SendGrid shows it (or PEM): set, POST
    # /v1/bounce-webhooks/sendgrid refuses a batch whose signature does not verify with it.
    sendgrid_verification_key: str | None = None
    # `json` for one JSON object per log line (with the ids of the event or message as keys).
    log_format: Literal["text", "json"] = "text"
    # Unset: the api serves GET /metrics on its own port. Set: `tripmail api` serves them on this port alone (on every
    # address, summed over its --workers), one that can stay inside the cluster while the api's own is public, and
    # the api's port answers 404 for /metrics.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Where `tripmail worker` serves its processes' metrics (prometheus-client multiprocess mode); unset: nowhere.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # `user:pass` that `tripmail flower` asks for; without it Flower serves loopback only.
    flower_auth: SecretStr | None = None
    # Requests a token may make per minute, a batch counting one per event; 0: no limit. Kept in Redis, so every
    # api process and instance draws on one budget.
    rate_limit_per_minute: int = Field(default=6000, ge=0)
    # How many of them may come at once after a quiet spell; unset: a minute's worth.
    rate_limit_burst: int | None = Field(default=None, ge=1)
    # Networks webhooks may be posted to although they are not public (loopback, private, link-local, ...), as
    # CIDRs separated by commas or spaces: `10.20.0.0/16, fd00:1::/64`. Empty: public addresses only.
    webhook_allow_networks: str = ""
    # `make bench` only: serves POST /bench/baseline/events, the ingest floor Tripmail's own path is measured against.
    bench_baseline: bool = False

    @property
    def revoked_marker_s(self) -> int:
        """How long `tripmail token revoke` leaves its Redis marker: well past a cached token's `setup_cache_s`, after
        which every api process reads the database, which says revoked, again."""
        return max(60, math.ceil(10 * self.setup_cache_s))

    @field_validator("send_retry_schedule")
    @classmethod
    def _durations(cls, value: str) -> str:
        waits = [parse_duration(wait) for wait in value.split(",")]
        if any(wait <= 0 for wait in waits):
            raise ValueError(f"every wait of TRIPMAIL_SEND_RETRY_SCHEDULE must be above 0 s, got {value!r}")
        return value

    @field_validator("send_domain_rates")
    @classmethod
    def _domain_rates(cls, value: str) -> str:
        parse_domain_rates(value)
        return value

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def webhook_allowed_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.webhook_allow_networks)

    @field_validator("send_give_up_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @property
    def send_retry_waits_s(self) -> tuple[int, ...]:
        return tuple(parse_duration(wait) for wait in self.send_retry_schedule.split(","))

    @field_validator("bounce_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        domain = value.strip().lower()
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+", domain):
            raise ValueError(f"TRIPMAIL_BOUNCE_DOMAIN must be a domain name such as bounces.example.com, got {value!r}")
        return domain

    @field_validator("phone_default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"TRIPMAIL_PHONE_DEFAULT_REGION must be a two-letter region code such as UA, got {value!r}"
            )
        return region

    @field_validator("mailgun_signing_key", "sendgrid_verification_key", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sendgrid_verification_key")
    @classmethod
    def _verification_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                load_sendgrid_key(value)
            except ValueError as exc:
                raise ValueError(f"TRIPMAIL_SENDGRID_VERIFICATION_KEY: {exc}") from exc
        return value

    @field_validator("flower_auth")
    @classmethod
    def _user_and_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            user, colon, password = value.get_secret_value().partition(":")
            # Flower splits its basic-auth option on commas, into several user:password pairs.
            if not (user and colon and password) or "," in value.get_secret_value():
                raise ValueError("TRIPMAIL_FLOWER_AUTH must be user:password, without a comma")
        return value

    @property
    def retry_wait_max_s(self) -> int:
        """retry_backoff_max_s, kept to half the visibility timeout at most: a retry waits inside a worker, unacked,
        and one held longer than the timeout would be handed to a second worker as well."""
        return max(1, min(self.retry_backoff_max_s, self.visibility_timeout_s // 2))

    @model_validator(mode="after")
    def _tasks_end_before_redelivery(self) -> Self:
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                f"TRIPMAIL_TASK_TIME_LIMIT_S ({self.task_time_limit_s}) must be below TRIPMAIL_VISIBILITY_TIMEOUT_S "
                f"({self.visibility_timeout_s}): a task still running when Redis redelivers it would run twice"
            )
        return self

    @model_validator(mode="after")
    def _attachments_fit_in_a_body(self) -> Self:
        as_base64 = 4 * math.ceil(self.attachment_max_bytes / 3)
        if as_base64 >= self.max_body_bytes:
            raise ValueError(
                f"TRIPMAIL_MAX_BODY_BYTES ({self.max_body_bytes}) must be above TRIPMAIL_ATTACHMENT_MAX_BYTES as "
                f"base64 ({as_base64} bytes): a trigger carrying attachments within their limit would be refused"
            )
        return self

    @model_validator(mode="after")
    def _no_placeholders(self) -> Self:
        left = [f"TRIPMAIL_{name.upper()}" for name, value in self if PLACEHOLDER.casefold() in _text(value).casefold()]
        if left:
            raise ValueError(
                f"{', '.join(left)} still {'holds' if len(left) == 1 else 'hold'} the placeholder {PLACEHOLDER}: put "
                "the real password or key in its place (deploy/k8s/secret.yaml, the environment or .env)"
            )
        return self


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def describe_refusal(exc: ValidationError) -> str:
    """What is wrong with the settings, a line per setting, without the values: pydantic's own text quotes them,
    and a value refused may be a password."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"TRIPMAIL_{str(error['loc'][0]).upper()}: {message}" if error["loc"] else message)
    return "\n".join(lines)


@lru_cache
def get_settings() -> Settings:
    return Settings()

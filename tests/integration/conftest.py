"""Real processes: redis-server on a free port, `tripmail worker` and `tripmail api` subprocesses, an aiosmtpd sink.

They are started once per database backend (in each pytest process: `make test` runs two) and shared: on SQLite
with one worker, on PostgreSQL with two, so every test of the shared stack runs on both, and concurrent workers
meet on PostgreSQL as in production. Each test isolates itself with a workspace and addresses of its own. A test
that kills, starves or counts what a process does takes a stack of its own (`stack`, `own_settings`: SQLite unless
the test parametrizes `own_settings` indirectly).
"""

import asyncio
import itertools
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from tests.builders import apply_spec, make_token, password_reset_spec, sender_of, unique_workspace_key
from tests.conftest import new_database
from tests.webhook_receiver import ALLOWED_HOST
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.delivery.smtp import parse_relays
from tripmail.migrations import upgrade

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll until `check` returns something truthy; a deadline for waiting, not a speed assertion."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET `url`/metrics: each sample's value by its name and labels."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    arrived_at: float = field(default_factory=time.monotonic)

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


# Permanent refusals by the start of an address's local part: one of each kind a relay gives, for each command.
SENDER_REFUSALS = {"refused-sender-": "550 5.7.1 sender rejected"}
RECIPIENT_REFUSALS = {
    "reject-": "550 5.1.1 mailbox unavailable",
    "policy-": "550 5.7.1 message refused as spam",
    "relaydenied-": "554 5.7.1 relay access denied",
    "plain553-": "553 mailbox name not allowed",
}
# Refused after the message content, by its first recipient.
DATA_REFUSALS = {
    "datarefused-": "554 transaction failed",
    "datauser-": "550 5.1.1 user unknown",
}


def _refusal(address: str, refusals: dict[str, str]) -> str | None:
    return next((reply for prefix, reply in refusals.items() if address.startswith(prefix)), None)


class Sink:
    """aiosmtpd handler that records what it accepts.

    A sender or recipient whose local part starts with a prefix of SENDER_REFUSALS, RECIPIENT_REFUSALS or
    DATA_REFUSALS gets that reply to its MAIL, RCPT or DATA, every time; a recipient starting with `flaky-` gets
    421 (and the connection closed) the first time it is offered and 250 after that. While `hold_rcpt` is set,
    RCPT replies are withheld; while `hold_data` is set, a message is stored and the reply to its DATA withheld.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[ReceivedMail] = []
        self._refused: Counter[str] = Counter()
        # Kept as mail arrives, so polling for thousands of messages does not rescan them all each time.
        self._counts: dict[str, Counter[str]] = {}
        self._deferred: set[str] = set()
        self.hold_rcpt = threading.Event()
        self.hold_data = threading.Event()
        self._held = 0

    @property
    def held(self) -> int:
        """How many SMTP sessions are waiting for a withheld reply."""
        with self._lock:
            return self._held

    async def _wait_while(self, hold: threading.Event) -> None:
        with self._lock:
            self._held += 1
        try:
            while hold.is_set():
                await asyncio.sleep(0.01)
        finally:
            with self._lock:
                self._held -= 1

    def _refuse(self, address: str, reply: str) -> str:
        with self._lock:
            self._refused[address] += 1
        return reply

    async def handle_MAIL(
        self, server: object, session: object, envelope: object, address: str, options: list[str]
    ) -> str:
        if (refusal := _refusal(address, SENDER_REFUSALS)) is not None:
            return self._refuse(address, refusal)
        # A handler that answers MAIL sets the envelope's sender itself.
        envelope.mail_from = address  # type: ignore[attr-defined]
        envelope.mail_options.extend(options)  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: object
    ) -> str:
        if self.hold_rcpt.is_set():
            await self._wait_while(self.hold_rcpt)
        if (refusal := _refusal(address, RECIPIENT_REFUSALS)) is not None:
            return self._refuse(address, refusal)
        if address.startswith("flaky-") and address not in self._deferred:
            self._deferred.add(address)
            return "421 4.3.2 service shutting down, try again later"
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        first = envelope.rcpt_tos[0]  # type: ignore[attr-defined]
        if (refusal := _refusal(first, DATA_REFUSALS)) is not None:
            return self._refuse(first, refusal)
        mail = ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)  # type: ignore[attr-defined]
        with self._lock:
            self._received.append(mail)
            self._counts.setdefault(mail.mail_from, Counter()).update(mail.rcpt_tos)
        if self.hold_data.is_set():
            await self._wait_while(self.hold_data)
        return "250 2.0.0 queued"

    def refusals(self, address: str) -> int:
        """How many transactions the sink refused because of `address` (as their sender or recipient)."""
        with self._lock:
            return self._refused[address]

    def count_from(self, sender: str) -> int:
        """How many deliveries (message x recipient) came from `sender`."""
        with self._lock:
            return self._counts[sender].total() if sender in self._counts else 0

    def recipients_from(self, sender: str) -> Counter[str]:
        """How many messages each address received from `sender`."""
        with self._lock:
            return Counter(self._counts.get(sender, Counter()))

    def from_sender(self, sender: str) -> list[ReceivedMail]:
        """What arrived from `sender`, in the order it arrived."""
        with self._lock:
            return [mail for mail in self._received if mail.mail_from == sender]

    def to(self, address: str, *, sender: str | None = None) -> list[ReceivedMail]:
        with self._lock:
            return [
                mail
                for mail in self._received
                if address in mail.rcpt_tos and (sender is None or mail.mail_from == sender)
            ]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tripmail")


def start_redis(port: int, log: Path, *, aof_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """A redis-server on loopback, answering. It keeps nothing on disk, unless given a directory for its
    append-only file, which it then keeps as production does (`appendfsync everysec`) and replays on start."""
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(aof_dir)]
        if aof_dir is not None
        else ["--appendonly", "no"]
    )
    process = subprocess.Popen(
        # Databases enough for a stack of each test's own (see own_settings).
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence, "--databases", "100"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_until(lambda: port_open(port), timeout=15, what="redis-server")
    return process


@contextmanager
def running_redis(port: int, log: Path) -> Iterator[str]:
    """A redis-server on loopback that keeps nothing on disk; its URL."""
    process = start_redis(port, log)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    with running_redis(free_port(), workdir / "redis.log") as url:
        yield url


@contextmanager
def running_sink(port: int, sink: Sink | None = None) -> Iterator[Sink]:
    """An aiosmtpd server on loopback, in a thread of this process, recording into a Sink (a new one unless given)."""
    sink = sink if sink is not None else Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    port = free_port()
    with running_sink(port) as sink:
        yield sink, port


BACKENDS = ["sqlite", "postgresql"]
# Fixed campaign ids below this are the tests' (altcraft's seed ids 84 and 96): an automation of this id, made first,
# starts the shared stacks' own automation ids above them, whichever test file runs first.
RESERVED_AUTOMATION_IDS = 999
# A message that failed transiently is tried again after a second, every second, rather than after a minute.
QUICK_RETRIES = "1s"
# Two pytest processes and their stacks share CI's two cores, where a starved redis-server may answer later than
# the api's default half second: an event of test_delivery once got no 202 in a full run, and a request of
# test_rate_limit went unlimited (the limit fails open for a second after Redis did not answer).
LOADED_MACHINE_REDIS_TIMEOUT_S = 2.0


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database of the shared stack; a module that runs on one only says so with
    `pytest.mark.parametrize("backend", [...], indirect=True, scope="session")`."""
    return str(request.param)


class SharedStacks:
    """The shared stack of each backend, started when first asked for and kept until the session ends.

    Session fixtures that depend on the parametrized `backend` are torn down whenever the next test needs the
    other backend, and with a test file at a time (pytest-xdist's loadfile) that was at every file: each of the
    ~25 files restarted both stacks, 10-17 s each, a third of the suite's time.
    """

    def __init__(self, request: pytest.FixtureRequest, workdir: Path, redis_url: str, smtp_port: int) -> None:
        self._request = request
        self._workdir = workdir
        self._redis_url = redis_url
        self._smtp_port = smtp_port
        self._settings: dict[str, Settings] = {}
        self._sessions: dict[str, sessionmaker[Session]] = {}
        self._workers: dict[str, list[str]] = {}
        self._api_urls: dict[str, str] = {}
        self._processes: list[subprocess.Popen[bytes]] = []

    def settings(self, backend: str) -> Settings:
        if backend not in self._settings:
            settings = Settings(
                database_url=new_database(self._request, backend, self._workdir),
                # A Redis database of each backend's own: a queue the other stack left behind is not this one's.
                redis_url=f"{self._redis_url.rsplit('/', 1)[0]}/{BACKENDS.index(backend)}",
                smtp_url=f"smtp://127.0.0.1:{self._smtp_port}",
                mail_dir=self._workdir / "mail",
                api_redis_timeout_s=LOADED_MACHINE_REDIS_TIMEOUT_S,
                send_retry_schedule=QUICK_RETRIES,
                webhook_allow_networks=ALLOWED_HOST,
                phone_default_region="UA",
            )
            upgrade(settings.database_url)
            self._settings[backend] = settings
            with self.sessions(backend).begin() as session:
                apply_spec(session, password_reset_spec("reserved-ids", id=RESERVED_AUTOMATION_IDS, status="draft"))
        return self._settings[backend]

    def sessions(self, backend: str) -> sessionmaker[Session]:
        if backend not in self._sessions:
            self._sessions[backend] = make_sessionmaker(self.settings(backend))
        return self._sessions[backend]

    def workers(self, backend: str) -> list[str]:
        """On SQLite one worker, on PostgreSQL two, as production scales out, and the scheduler that hands them what
        is due to be tried again; the workers' names."""
        if backend not in self._workers:
            names = [f"{backend}-{number}" for number in range(1, 3 if backend == "postgresql" else 2)]
            self._processes += [start_worker(self.settings(backend), self._workdir, name) for name in names]
            self._processes.append(start_scheduler(self.settings(backend), self._workdir, f"scheduler-{backend}"))
            self._workers[backend] = names
        return self._workers[backend]

    def api_url(self, backend: str) -> str:
        if backend not in self._api_urls:
            process, url = start_api(self.settings(backend), self._workdir, f"api-{backend}")
            self._processes.append(process)
            self._api_urls[backend] = url
        return self._api_urls[backend]

    def close(self) -> None:
        for process in self._processes:
            stop(process)
        for sessions in self._sessions.values():
            sessions.kw["bind"].dispose()


@pytest.fixture(scope="session")
def shared_stacks(
    request: pytest.FixtureRequest, workdir: Path, redis_url: str, smtp_sink: tuple[Sink, int]
) -> Iterator[SharedStacks]:
    stacks = SharedStacks(request, workdir, redis_url, smtp_sink[1])
    yield stacks
    stacks.close()


@pytest.fixture(scope="session")
def stack_settings(backend: str, shared_stacks: SharedStacks) -> Settings:
    return shared_stacks.settings(backend)


def service_env(settings: Settings) -> dict[str, str]:
    optional = {
        "TRIPMAIL_WORKER_METRICS_PORT": settings.worker_metrics_port,
        "TRIPMAIL_METRICS_PORT": settings.metrics_port,
        "TRIPMAIL_RATE_LIMIT_BURST": settings.rate_limit_burst,
        "TRIPMAIL_BOUNCE_DOMAIN": settings.bounce_domain,
        "TRIPMAIL_MAILGUN_SIGNING_KEY": (
            settings.mailgun_signing_key.get_secret_value() if settings.mailgun_signing_key else None
        ),
        "TRIPMAIL_SENDGRID_VERIFICATION_KEY": settings.sendgrid_verification_key,
        "TRIPMAIL_PHONE_DEFAULT_REGION": settings.phone_default_region,
    }
    return (
        os.environ
        | {name: str(value) for name, value in optional.items() if value is not None}
        | {
            "TRIPMAIL_DATABASE_URL": settings.database_url,
            "TRIPMAIL_REDIS_URL": settings.redis_url,
            "TRIPMAIL_SMTP_URL": settings.smtp_url.get_secret_value(),
            "TRIPMAIL_MAIL_DIR": str(settings.mail_dir),
            "TRIPMAIL_VISIBILITY_TIMEOUT_S": str(settings.visibility_timeout_s),
            "TRIPMAIL_TASK_TIME_LIMIT_S": str(settings.task_time_limit_s),
            "TRIPMAIL_SMTP_CONNECTIONS": str(settings.smtp_connections),
            "TRIPMAIL_SCHEDULER_INTERVAL_S": str(settings.scheduler_interval_s),
            "TRIPMAIL_LOG_FORMAT": settings.log_format,
            "TRIPMAIL_RATE_LIMIT_PER_MINUTE": str(settings.rate_limit_per_minute),
            "TRIPMAIL_SETUP_CACHE_S": str(settings.setup_cache_s),
            "TRIPMAIL_TASK_LOST_AFTER_S": str(settings.task_lost_after_s),
            "TRIPMAIL_API_REDIS_TIMEOUT_S": str(settings.api_redis_timeout_s),
            "TRIPMAIL_RETRY_BACKOFF_MAX_S": str(settings.retry_backoff_max_s),
            "TRIPMAIL_SQLITE_LOCK_WAIT_S": str(settings.sqlite_lock_wait_s),
            "TRIPMAIL_SEND_RETRY_SCHEDULE": settings.send_retry_schedule,
            "TRIPMAIL_SEND_GIVE_UP_AFTER": str(settings.send_give_up_after),
            "TRIPMAIL_SEND_DOMAIN_RATES": settings.send_domain_rates,
            "TRIPMAIL_WEBHOOK_ALLOW_NETWORKS": settings.webhook_allow_networks,
        }
    )


def run_tripmail(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """A `tripmail` command against these settings' database and Redis, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tripmail", *args],
        env=service_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to a process started in a group of its own and all its children at once: no warm shutdown, no
    acks, nothing flushed."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def pool_processes(worker: subprocess.Popen[bytes]) -> list[int]:
    """The pids of a worker's pool processes (the children of its main process)."""
    return [int(pid) for pid in Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()]


def kill_pool(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL to a worker's pool processes, as the kernel's OOM killer sends to the one that grew: the main process
    sees its task's process lost, and starts new ones."""
    for pid in pool_processes(worker):
        os.kill(pid, signal.SIGKILL)


def start_worker(
    settings: Settings,
    workdir: Path,
    name: str = "worker",
    *,
    queues: str | None = None,
    max_data_bytes: int | None = None,
) -> subprocess.Popen[bytes]:
    """`tripmail worker` named `name`@tests (on the lanes `queues` names, else on both), in a process group of its
    own, so a test can kill the whole worker at once.

    `max_data_bytes` limits each of its processes' data (RLIMIT_DATA, which the pool processes inherit): past it an
    allocation fails, as it would for a container at its memory limit. Not RLIMIT_AS, which also counts address
    space reserved and never used (8 MiB per thread's stack, 64 MiB per malloc arena): reservations, not memory.
    """
    log = workdir / f"{name}.log"
    lanes = ["--queues", queues] if queues is not None else []

    def limit_data() -> None:
        assert max_data_bytes is not None
        resource.setrlimit(resource.RLIMIT_DATA, (max_data_bytes, max_data_bytes))

    process = subprocess.Popen(
        [sys.executable, "-m", "tripmail", "worker", "--concurrency", "2", "--hostname", f"{name}@tests", *lanes],
        env=service_env(settings),
        cwd=workdir,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=limit_data if max_data_bytes is not None else None,
    )
    wait_until(lambda: b" ready." in log.read_bytes() or process.poll() is not None, timeout=60, what="worker ready")
    assert process.poll() is None, log.read_text()
    return process


def start_scheduler(settings: Settings, workdir: Path, name: str = "scheduler") -> subprocess.Popen[bytes]:
    """`tripmail scheduler`, in a process group of its own like the worker."""
    log = workdir / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tripmail", "scheduler"],
        env=service_env(settings),
        cwd=workdir,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_until(lambda: b"scheduler started" in log.read_bytes() or process.poll() is not None, what="scheduler started")
    assert process.poll() is None, log.read_text()
    return process


def start_server(
    command: list[str], env: dict[str, str], log: Path, *, probe: str, status: int
) -> tuple[subprocess.Popen[bytes], str]:
    """`tripmail <command> --port N` on a free port, once GET `probe` answers `status`; the process and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tripmail", *command, "--port", str(port)],
        env=env,
        cwd=log.parent,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}{probe}", timeout=2).status_code == status
        except httpx.TransportError:
            return False

    wait_until(answers, timeout=60, what=f"tripmail {command[0]} serving")
    return process, url


def start_api(settings: Settings, workdir: Path, name: str = "api") -> tuple[subprocess.Popen[bytes], str]:
    return start_server(["api"], service_env(settings), workdir / f"{name}.log", probe="/healthz", status=200)


@pytest.fixture(scope="session")
def workers(backend: str, shared_stacks: SharedStacks) -> list[str]:
    """The shared stack's workers, started; their names."""
    return shared_stacks.workers(backend)


@pytest.fixture(scope="session")
def api_url(backend: str, shared_stacks: SharedStacks) -> str:
    return shared_stacks.api_url(backend)


@pytest.fixture(scope="session")
def db(backend: str, shared_stacks: SharedStacks) -> sessionmaker[Session]:
    return shared_stacks.sessions(backend)


@dataclass(frozen=True)
class Tenant:
    key: str
    token: str

    @property
    def sender(self) -> str:
        return sender_of(self.key)


@pytest.fixture
def tenant(db: sessionmaker[Session]) -> Tenant:
    """A workspace of this test's own, loaded with the password-reset automation, and a token for it."""
    key = unique_workspace_key()
    with db.begin() as session:
        apply_spec(session, password_reset_spec(key))
        token = make_token(session, key)
    return Tenant(key=key, token=token)


@pytest.fixture
def other_tenant(db: sessionmaker[Session]) -> Tenant:
    """A second workspace whose only event is ONLY_OTHER: a token of `tenant` must not reach it."""
    key = unique_workspace_key("other")
    with db.begin() as session:
        apply_spec(session, password_reset_spec(key, event="ONLY_OTHER"))
        token = make_token(session, key)
    return Tenant(key=key, token=token)


@pytest.fixture
def sink(smtp_sink: tuple[Sink, int], workers: list[str]) -> Sink:
    """The SMTP sink the running workers send to."""
    return smtp_sink[0]


# A Redis database each, after the shared stacks' ones, so no two stacks share a queue.
_redis_databases = itertools.count(len(BACKENDS))
_apply_files = itertools.count(1)


@pytest.fixture
def own_settings(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Settings:
    """A test's own settings, on SQLite unless the test parametrizes this fixture indirectly with a backend."""
    # A short visibility timeout brings a killed worker's tasks back within seconds rather than an hour.
    settings = Settings(
        database_url=new_database(request, getattr(request, "param", "sqlite"), tmp_path),
        redis_url=f"{redis_url.rsplit('/', 1)[0]}/{next(_redis_databases)}",
        smtp_url=f"smtp://127.0.0.1:{free_port()}",
        mail_dir=tmp_path / "mail",
        visibility_timeout_s=15,
        task_time_limit_s=10,
        scheduler_interval_s=0.2,
        api_redis_timeout_s=LOADED_MACHINE_REDIS_TIMEOUT_S,
        send_retry_schedule=QUICK_RETRIES,
        webhook_allow_networks=ALLOWED_HOST,
    )
    upgrade(settings.database_url)
    return settings


@dataclass
class OwnStack:
    """A stack of a test's own: its api is running; workers are started (and killed) by the test."""

    settings: Settings
    db: sessionmaker[Session]
    api_url: str
    workdir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def smtp_port(self) -> int:
        """The port of the first relay."""
        return parse_relays(self.settings.smtp_url.get_secret_value())[0].target.port

    def start_worker(
        self, name: str = "worker", *, queues: str | None = None, max_data_bytes: int | None = None
    ) -> subprocess.Popen[bytes]:
        process = start_worker(self.settings, self.workdir, name, queues=queues, max_data_bytes=max_data_bytes)
        self.workers.append(process)
        return process

    def start_scheduler(self, name: str = "scheduler") -> subprocess.Popen[bytes]:
        process = start_scheduler(self.settings, self.workdir, name)
        self.workers.append(process)
        return process

    def tripmail(self, *args: str) -> str:
        """Run a `tripmail` command against this stack; its output."""
        done = run_tripmail(self.settings, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def apply(self, spec: dict[str, Any]) -> str:
        """`tripmail apply` of the spec, written to a YAML file as a user would."""
        path = self.workdir / f"apply-{next(_apply_files)}.yaml"
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        return self.tripmail("apply", str(path))

    def tenant(self, prefix: str) -> Tenant:
        """A workspace with the password-reset automation, and a token for it."""
        key = unique_workspace_key(prefix)
        with self.db.begin() as session:
            apply_spec(session, password_reset_spec(key))
            return Tenant(key, make_token(session, key))


@pytest.fixture
def stack(own_settings: Settings, tmp_path: Path) -> Iterator[OwnStack]:
    sessions = make_sessionmaker(own_settings)
    api, api_url = start_api(own_settings, tmp_path)
    own = OwnStack(own_settings, sessions, api_url, tmp_path)
    yield own
    for process in [*own.workers, api]:
        if process.poll() is None:
            stop(process)
    sessions.kw["bind"].dispose()

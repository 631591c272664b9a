"""Real processes: redis-server on a free port, `tripmail worker` and `tripmail api` subprocesses, an aiosmtpd sink.

They are started once per database backend (in each pytest process: `make test` runs two) and shared: on SQLite
with one worker, on PostgreSQL with two, so every test of the shared stack runs on both, and concurrent workers
meet on PostgreSQL as in production. Each test isolates itself with a workspace and addresses of its own. A test
that kills, starves or counts what a process does takes a stack of its own (`stack`, `own_settings`: SQLite unless
the test parametrizes `own_settings` indirectly).
"""

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_tenant, password_reset_spec, unique_workspace_key
from tests.support.databases import new_database
from tests.support.ports import free_port
from tests.support.redis_server import running_redis
from tests.support.smtp_sink import Sink, running_sink
from tests.support.stack import (
    BACKENDS,
    LOADED_MACHINE_REDIS_TIMEOUT_S,
    QUICK_RETRIES,
    OwnStack,
    SharedStacks,
    start_api,
    stop,
)
from tests.support.webhook_receiver import ALLOWED_HOST
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.migrations import upgrade


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tripmail")


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    with running_redis(free_port(), workdir / "redis.log") as url:
        yield url


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    port = free_port()
    with running_sink(port) as sink:
        yield sink, port


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database of the shared stack; a module that runs on one only says so with
    `pytest.mark.parametrize("backend", [...], indirect=True, scope="session")`."""
    return str(request.param)


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


@pytest.fixture
def tenant(db: sessionmaker[Session]) -> Tenant:
    """A workspace of this test's own, loaded with the password-reset automation, and a token for it."""
    return make_tenant(db, password_reset_spec(unique_workspace_key()))


@pytest.fixture
def other_tenant(db: sessionmaker[Session]) -> Tenant:
    """A second workspace whose only event is ONLY_OTHER: a token of `tenant` must not reach it."""
    return make_tenant(db, password_reset_spec(unique_workspace_key("other"), event="ONLY_OTHER"))


@pytest.fixture
def sink(smtp_sink: tuple[Sink, int], workers: list[str]) -> Sink:
    """The SMTP sink the running workers send to."""
    return smtp_sink[0]


# A Redis database each, after the shared stacks' ones, so no two stacks share a queue.
_redis_databases = itertools.count(len(BACKENDS))


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

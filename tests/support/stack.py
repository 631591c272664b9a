"""A Tripmail stack's processes (`tripmail api`, `worker`, `scheduler`), started with the environment of a Settings
and stopped again: the integration tests' and the bench's one launcher."""

import itertools
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, apply_spec, make_tenant, password_reset_spec, unique_workspace_key
from tests.support.databases import new_database
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.webhook_receiver import ALLOWED_HOST
from tripmail.config import Settings
from tripmail.db import make_sessionmaker
from tripmail.delivery.smtp import parse_relays
from tripmail.migrations import upgrade

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


def service_env(settings: Settings) -> dict[str, str]:
    """The environment of a `tripmail` process that is to read `settings`: each field that is set, as TRIPMAIL_ and
    its name in capitals; no TRIPMAIL_ variable of this process's own environment reaches it otherwise."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("TRIPMAIL_")}
    return inherited | {
        f"TRIPMAIL_{name.upper()}": _as_variable(value) for name, value in settings if value is not None
    }


def _as_variable(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_tripmail(settings: Settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A `tripmail` command against these settings' database and Redis, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tripmail", *args],
        env=service_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
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
    concurrency: int = 2,
    hostname: str | None = None,
    max_data_bytes: int | None = None,
    timeout: float = 60,
) -> subprocess.Popen[bytes]:
    """`tripmail worker` named `hostname` (`name`@tests unless given), on the lanes `queues` names (else on both), in
    a process group of its own, so a test can kill the whole worker at once; its log is `name`.log in `workdir`.

    `max_data_bytes` limits each of its processes' data (RLIMIT_DATA, which the pool processes inherit): past it an
    allocation fails, as it would for a container at its memory limit. Not RLIMIT_AS, which also counts address
    space reserved and never used (8 MiB per thread's stack, 64 MiB per malloc arena): reservations, not memory.
    """
    log = workdir / f"{name}.log"
    lanes = ["--queues", queues] if queues is not None else []

    def limit_data() -> None:
        assert max_data_bytes is not None
        resource.setrlimit(resource.RLIMIT_DATA, (max_data_bytes, max_data_bytes))

    argv = ["worker", "--concurrency", str(concurrency), "--hostname", hostname or f"{name}@tests", *lanes]
    process = _launch(argv, service_env(settings), log, preexec_fn=limit_data if max_data_bytes is not None else None)
    _wait_for_log(process, log, b" ready.", timeout=timeout, what=f"{name} ready")
    return process


def start_scheduler(settings: Settings, workdir: Path, name: str = "scheduler") -> subprocess.Popen[bytes]:
    """`tripmail scheduler`, in a process group of its own like the worker."""
    log = workdir / f"{name}.log"
    process = _launch(["scheduler"], service_env(settings), log)
    _wait_for_log(process, log, b"scheduler started", timeout=30, what=f"{name} started")
    return process


def start_server(
    command: list[str], env: dict[str, str], log: Path, *, probe: str, status: int
) -> tuple[subprocess.Popen[bytes], str]:
    """`tripmail <command> --port N` on a free port, once GET `probe` answers `status`; the process and its URL."""
    port = free_port()
    process = _launch([*command, "--port", str(port)], env, log, own_group=False)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        _check_running(process, log)
        try:
            return httpx.get(f"{url}{probe}", timeout=2).status_code == status
        except httpx.TransportError:
            return False

    _until_ready(process, answers, timeout=60, what=f"tripmail {command[0]} serving")
    return process, url


def start_api(settings: Settings, workdir: Path, name: str = "api") -> tuple[subprocess.Popen[bytes], str]:
    return start_server(["api"], service_env(settings), workdir / f"{name}.log", probe="/healthz", status=200)


def _launch(
    command: list[str],
    env: dict[str, str],
    log: Path,
    *,
    own_group: bool = True,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m tripmail <command>` in the log's folder, its output (from a fresh log) in the log."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "tripmail", *command],
            env=env,
            cwd=log.parent,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
            preexec_fn=preexec_fn,
        )


def _check_running(process: subprocess.Popen[bytes], log: Path) -> None:
    # A RuntimeError, not an assertion: the reliability bench, whose faults may end a worker while it starts,
    # starts another one then instead of giving up.
    if process.poll() is not None:
        raise RuntimeError(f"{log.stem} exited ({process.returncode}):\n{log.read_text(errors='replace')}")


def _wait_for_log(process: subprocess.Popen[bytes], log: Path, text: bytes, *, timeout: float, what: str) -> None:
    def seen() -> bool:
        _check_running(process, log)
        return text in log.read_bytes()

    _until_ready(process, seen, timeout=timeout, what=what)


def _until_ready(process: subprocess.Popen[bytes], ready: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Wait for `ready`; a process that never gets there is stopped, so no caller is left with one it never got."""
    try:
        wait_until(ready, timeout=timeout, what=what)
    except BaseException:
        stop(process)
        raise


_apply_files = itertools.count(1)


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
        return make_tenant(self.db, password_reset_spec(unique_workspace_key(prefix)))

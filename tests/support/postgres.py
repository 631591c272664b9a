"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary folder, served on a free port."""

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.support.ports import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Cluster:
    bin_dir: Path
    folder: Path
    port: int
    as_user: list[str]

    def run(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / program), *args], check=True, capture_output=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://tripmail@127.0.0.1:{self.port}/{database}"

    def _execute(self, *statements: str) -> None:
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=tripmail dbname=postgres", autocommit=True
        ) as connection:
            for statement in statements:
                connection.execute(statement.encode())

    def new_database(self) -> str:
        """The URL of a new, empty database of this cluster."""
        name = f"t_{uuid.uuid4().hex}"
        self._execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def replace_with_copy(self, url: str, template: str) -> None:
        """Make the database at `url` (no one connected) a copy of the one at `template` (no one connected)."""
        name, source = url.rsplit("/", 1)[1], template.rsplit("/", 1)[1]
        self._execute(f'DROP DATABASE "{name}"', f'CREATE DATABASE "{name}" TEMPLATE "{source}"')

    def start_server(self) -> None:
        """Start the server (again), waiting until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        data, log = str(self.folder / "data"), str(self.folder / "log")
        self.run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start")

    def stop_server(self) -> None:
        """Stop the server as an operator would (`pg_ctl stop -m fast`): open connections are terminated."""
        self.run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster() -> Cluster:
    """A running cluster with a trusted superuser `tripmail`; RuntimeError says why there is none."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (scripts/ensure-postgres-server.sh installs it as root)")
    folder = Path(tempfile.mkdtemp(prefix="tripmail-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root; Debian's package brings the postgres user.
        shutil.chown(folder, user="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(bin_dir, folder, free_port(), as_user)
    try:
        cluster.run("initdb", "-D", str(folder / "data"), "-U", "tripmail", "--auth=trust", "--no-sync", "-E", "UTF8")
        cluster.start_server()
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        detail = exc.stderr.decode(errors="replace") if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        raise RuntimeError(f"could not start PostgreSQL: {detail.strip()}") from exc
    return cluster


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A cluster of the caller's own, removed afterwards; the test is skipped when PostgreSQL is not installed."""
    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()

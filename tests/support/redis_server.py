"""redis-server processes for the tests and the bench."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.polling import wait_until
from tests.support.ports import port_open


def start_redis(port: int, log: Path, *, aof_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """A redis-server on loopback, answering. It keeps nothing on disk, unless given a directory for its
    append-only file, which it then keeps as production does (`appendfsync everysec`) and replays on start."""
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(aof_dir)]
        if aof_dir is not None
        else ["--appendonly", "no"]
    )
    process = subprocess.Popen(
        # Databases enough for a stack of each test's own (see own_settings in tests/integration/conftest.py).
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

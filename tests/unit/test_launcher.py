"""The one launcher of `tripmail` processes, as the bench uses it: a process it starts is handed over, and one that
never gets ready is not."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.processes import ProcessGroup
from tests.support.stack import start_worker
from tripmail.config import Settings


def test_a_worker_that_exits_while_starting_is_a_runtime_error_showing_its_log(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'tripmail.db'}", smtp_url="ftp://relay")
    with pytest.raises(RuntimeError, match="TRIPMAIL_SMTP_URL"):
        start_worker(settings, tmp_path, "broken")


def test_a_process_the_bench_adopts_is_stopped_with_the_group(tmp_path: Path) -> None:
    log = tmp_path / "sleeper.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdout=output)
    with ProcessGroup(tmp_path) as group:
        assert group.adopt("sleeper", process, log).alive()
    assert process.poll() is not None

"""Processes the bench starts (each stopped again, also on error) and the CPU each process tree uses."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

from bench.quickstart import REPOSITORY
from tests.support.polling import wait_until
from tests.support.ports import port_open

PYTHON = sys.executable


def bench_env(**variables: str) -> dict[str, str]:
    """The bench's own modules (not an installed package) importable from any working directory."""
    pythonpath = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    return os.environ | {"PYTHONPATH": pythonpath} | variables


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None and self.log.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class ProcessGroup:
    """Starts subprocesses with their output in a log file, or adopts those tests.support.stack started, and stops
    each one (and what it forked) on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._started: list[Started] = []

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for started in reversed(self._started):
            self.stop(started)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        pipes: bool = False,
    ) -> Started:
        """With `pipes`, stdin and stdout are pipes for a line protocol (stderr still goes to the log)."""
        log = self.logs / f"{name}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else output,
                stderr=output,
            )
        started = Started(name, process, log)
        self._started.append(started)
        return started

    def adopt(self, name: str, process: subprocess.Popen[bytes], log: Path) -> Started:
        """A process started elsewhere (a `tripmail` one, by the tests' launcher), stopped with the rest."""
        started = Started(name, process, log)
        self._started.append(started)
        return started

    def stop(self, started: Started) -> None:
        if started not in self._started:
            return
        self._started.remove(started)
        try:
            descendants = psutil.Process(started.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        if started.alive():
            started.process.send_signal(signal.SIGTERM)
            try:
                started.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                started.process.kill()
                started.process.wait(timeout=10)
        # A pool child whose parent was killed would outlive it: end those the parent left behind.
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()
        for stream in (started.process.stdin, started.process.stdout):
            if stream is not None:
                stream.close()


def wait_for_log(started: Started, text: str, *, timeout: float) -> None:
    def seen() -> bool:
        if not started.alive():
            raise RuntimeError(f"{started.name} exited ({started.process.returncode}):\n{started.log_tail()}")
        return text in started.log_text()

    wait_until(seen, timeout=timeout, what=f"{started.name}: {text!r}")


def wait_for_port(started: Started, port: int, *, timeout: float = 30) -> None:
    def listening() -> bool:
        if not started.alive():
            raise RuntimeError(f"{started.name} exited ({started.process.returncode}):\n{started.log_tail()}")
        return port_open(port)

    wait_until(listening, timeout=timeout, what=f"{started.name} on port {port}")


def read_line(stream: IO[bytes] | None) -> str:
    assert stream is not None, "started with pipes"
    return stream.readline().decode().strip()


def write_line(stream: IO[bytes] | None, line: str) -> None:
    assert stream is not None, "started with pipes"
    stream.write(f"{line}\n".encode())
    stream.flush()


@dataclass(frozen=True)
class Tree:
    """A process and, when `recursive`, everything it has forked (a Celery worker and its pool)."""

    pid: int
    recursive: bool = True


@dataclass
class CpuMeter:
    """CPU seconds (user + system, and system alone) each named process tree used between start() and stop().

    Sampled every `interval` seconds: a process first seen during the window counts from zero, one that ends
    counts up to its last sample.
    """

    trees: dict[str, Tree]
    interval: float = 0.25
    _first: dict[tuple[int, float], tuple[float, float]] = field(default_factory=dict)
    _last: dict[tuple[int, float], tuple[str, float, float]] = field(default_factory=dict)
    _handles: dict[int, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started_at: float = 0.0
    stopped_at: float = 0.0

    def start(self) -> None:
        self._sample(first=True)
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._thread.start()

    def stop(self) -> tuple[dict[str, float], dict[str, float]]:
        """CPU seconds per tree, and the part of them spent in the kernel."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(first=False)
        self.stopped_at = time.monotonic()
        used = dict.fromkeys(self.trees, 0.0)
        system = dict.fromkeys(self.trees, 0.0)
        for key, (name, total, kernel) in self._last.items():
            first_total, first_kernel = self._first.get(key, (0.0, 0.0))
            used[name] += total - first_total
            system[name] += kernel - first_kernel
        return used, system

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(first=False)

    def _processes(self, tree: Tree) -> list[psutil.Process]:
        root = self._handle(tree.pid)
        if root is None:
            return []
        try:
            children = root.children(recursive=True) if tree.recursive else []
        except psutil.Error:
            children = []
        return [root, *(handle for child in children if (handle := self._handle(child.pid)) is not None)]

    def _handle(self, pid: int) -> psutil.Process | None:
        if pid not in self._handles:
            try:
                self._handles[pid] = psutil.Process(pid)
            except psutil.Error:
                return None
        return self._handles[pid]

    def _sample(self, *, first: bool) -> None:
        for name, tree in self.trees.items():
            for process in self._processes(tree):
                try:
                    times = process.cpu_times()
                    key = (process.pid, process.create_time())
                except psutil.Error:
                    continue
                if first:
                    self._first[key] = (times.user + times.system, times.system)
                self._last[key] = (name, times.user + times.system, times.system)

"""Waiting for a condition another process brings about, with a deadline."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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

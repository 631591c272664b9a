"""Identifiers and the clock."""

from datetime import UTC, datetime

import uuid6


def new_id() -> str:
    """A time-ordered UUIDv7, so ids sort by creation."""
    return str(uuid6.uuid7())


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalize_key(key: str) -> str:
    """Event-type keys and triggers match case-insensitively."""
    return key.strip().casefold()

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


def iso_utc(moment: datetime, *, milliseconds: bool = False) -> str:
    """2026-04-22T09:15:30Z, or 2026-04-22T09:15:30.566Z: the UTC form the platforms' answers use."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds" if milliseconds else "seconds")
    return text.replace("+00:00", "Z")

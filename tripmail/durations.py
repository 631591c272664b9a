"""Durations as written in apply files: 90s, 30m, 24h, 2d, or a bare number of seconds."""

import re

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


def parse_duration(value: str | int) -> int:
    """Seconds in the duration; ValueError says what was expected."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return value
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"duration {value!r} is not a number followed by s, m, h, d or w (e.g. 24h)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]

"""Logging for every process: one format, text or JSON (TRIPMAIL_LOG_FORMAT), on standard error.

The lines about events and messages carry their ids as fields (`extra`), which the JSON format writes as keys;
they never carry a token, a password or a message's content.
"""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: int | str, *, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # At INFO they log each request's URL, and a webhook URL may carry the receiver's secret in its query.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)

"""Automation runs' transactions: each due run carried on in one of its own."""

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from tripmail.automations.runs import carry_on


def carry_on_runs(sessions: sessionmaker[Session], run_ids: list[int], *, clock: Callable[[], datetime]) -> list[int]:
    """carry_on for each run, a transaction each; the ids of their messages to send."""
    message_ids: list[int] = []
    for run_id in run_ids:
        with sessions.begin() as session:
            message_ids += carry_on(session, run_id, now=clock())
    return message_ids

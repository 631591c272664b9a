"""The reference "the way most apps do it": one Celery task per email, a new smtplib connection for each.

The task renders the quickstart's password-reset template with plain Jinja2, builds the message with the stdlib
`email` package and sends it with `smtplib.SMTP(...).send_message`, opening and closing a connection per email.
Celery runs with its defaults (no result backend, so results are ignored).

Worker: `BENCH_NAIVE_BROKER_URL=redis://... BENCH_NAIVE_SMTP_PORT=N celery -A bench.naive_app worker --pool prefork
--concurrency 2`. The bench publishes with `publisher(broker_url).send_task(SEND_EMAIL, args=[...])`.
"""

import os
import smtplib
from email.utils import formatdate, make_msgid

from celery import Celery
from jinja2 import Environment

from bench.quickstart import quickstart_email, stdlib_message

SEND_EMAIL = "bench.naive.send_email"

_EMAIL = quickstart_email()
_PLAIN = Environment(autoescape=False)  # noqa: S701 - subject and text parts are not HTML
_HTML = Environment(autoescape=True)
_SUBJECT = _PLAIN.from_string(_EMAIL.subject)
_TEXT = _PLAIN.from_string(_EMAIL.text or "")
_BODY = _HTML.from_string(_EMAIL.html or "")


def _broker_url() -> str:
    return os.environ.get("BENCH_NAIVE_BROKER_URL", "redis://127.0.0.1:6379/1")


def send_email(to: str, first_name: str, link: str) -> None:
    context = {"contact": {"first_name": first_name, "email": to}, "forgot_password_link": link}
    message = stdlib_message(
        sender=_EMAIL.sender,
        to=to,
        subject=_SUBJECT.render(context),
        text=_TEXT.render(context),
        html=_BODY.render(context),
        date=formatdate(localtime=True),
        message_id=make_msgid(),
    )
    host = os.environ.get("BENCH_NAIVE_SMTP_HOST", "127.0.0.1")
    with smtplib.SMTP(host, int(os.environ.get("BENCH_NAIVE_SMTP_PORT", "25")), timeout=30) as smtp:
        smtp.send_message(message)


app = Celery("naive_mail", broker=_broker_url())
app.conf.task_ignore_result = True
app.task(name=SEND_EMAIL)(send_email)


def publisher(broker_url: str) -> Celery:
    """A producer-only app for the same broker; tasks are sent by name, as another process would."""
    producer = Celery("naive_mail_publisher", broker=broker_url)
    producer.conf.task_ignore_result = True
    return producer

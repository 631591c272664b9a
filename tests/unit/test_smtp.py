from datetime import UTC, datetime
from email import message_from_bytes
from email.mime.text import MIMEText
from email.policy import compat32, default

import pytest

from tripmail.delivery import build_email
from tripmail.rendering import RenderedEmail
from tripmail.smtp import SmtpTarget, parse_smtp_url


def test_smtp_url_forms() -> None:
    assert parse_smtp_url("smtp://127.0.0.1:1025") == SmtpTarget("127.0.0.1", 1025, False, None, None, None)
    assert parse_smtp_url("smtp://us%40er:p%3Ass@relay.test:587?starttls=1") == SmtpTarget(
        "relay.test", 587, False, True, "us@er", "p:ss"
    )
    assert parse_smtp_url("smtps://relay.test") == SmtpTarget("relay.test", 465, True, None, None, None)
    assert parse_smtp_url("smtp://relay.test?starttls=0").start_tls is False


def test_smtp_url_must_be_smtp() -> None:
    with pytest.raises(ValueError, match="smtp://user:pass@host:587"):
        parse_smtp_url("http://relay.test")


def test_built_message_has_both_parts_and_the_headers() -> None:
    raw = build_email(
        sender="Acme <noreply@acme.test>",
        recipient="ann@acme.test",
        rendered=RenderedEmail(subject="Réinitialiser", html="<p>Hi</p>", text="Hi"),
        message_id="<e1.1@acme.test>",
        now=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    )
    assert b"\r\n" in raw
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["Subject"] == "Réinitialiser"
    assert parsed["Message-ID"] == "<e1.1@acme.test>"
    assert parsed["Date"] == "Sun, 01 Mar 2026 12:00:00 +0000"
    assert [part.get_content_type() for part in parsed.walk()] == ["multipart/alternative", "text/plain", "text/html"]


def test_header_values_cannot_carry_line_breaks() -> None:
    with pytest.raises(ValueError, match=r"linefeed|newline|CR|LF"):
        build_email(
            sender="Acme <noreply@acme.test>",
            recipient="ann@acme.test\r\nBcc: x@evil.test",
            rendered=RenderedEmail(subject="s", html=None, text="t"),
            message_id="<e1.1@acme.test>",
            now=datetime(2026, 3, 1, tzinfo=UTC),
        )


@pytest.mark.parametrize(
    "text",
    ["Hi Ann, reset here: https://x.test/r\n" * 3, "Привіт, Ганно 🙂\n" * 40, "x" * 3000, ""],
    ids=["ascii", "unicode", "one long line", "empty"],
)
def test_a_one_part_message_is_what_mimetext_makes(text: str) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    raw = build_email(
        sender="Acme <noreply@acme.test>",
        recipient="ann@acme.test",
        rendered=RenderedEmail(subject="Hi", html=None, text=text),
        message_id="<e1.1@acme.test>",
        now=now,
    )
    expected = MIMEText(text, "plain", "utf-8")
    for name, value in (
        ("From", "Acme <noreply@acme.test>"),
        ("To", "ann@acme.test"),
        ("Subject", "Hi"),
        ("Date", "Sun, 01 Mar 2026 12:00:00 +0000"),
        ("Message-ID", "<e1.1@acme.test>"),
    ):
        expected[name] = value
    assert raw == expected.as_bytes(policy=compat32.clone(linesep="\r\n"))
    assert message_from_bytes(raw, policy=default).get_content() == text

import base64
from collections import Counter
from datetime import UTC, datetime
from email import encoders, message_from_bytes
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32, default

import pytest

from tripmail.delivery.mime import build_email
from tripmail.delivery.rates import parse_domain_rates
from tripmail.delivery.smtp import (
    Outcome,
    Relay,
    Relays,
    SendResult,
    SmtpTarget,
    Stage,
    parse_relays,
    parse_smtp_url,
    refuses_recipient,
)
from tripmail.rendering.attachments import encode_attachment
from tripmail.rendering.templates import RenderedEmail
from tripmail.schemas.trigger import Attachment


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


def test_several_relays_in_order_with_weights_and_rates() -> None:
    relays = parse_relays(
        "smtp://user:p%2Cw@a.test:587?starttls=1&weight=3&rate=100/second, smtps://b.test?rate=10/second;300/minute"
        " smtp://c.test:2525?weight=0"
    )
    assert relays == [
        Relay(SmtpTarget("a.test", 587, False, True, "user", "p,w"), 3, "100/second"),
        Relay(SmtpTarget("b.test", 465, True, None, None, None), 1, "10/second;300/minute"),
        Relay(SmtpTarget("c.test", 2525, False, None, None, None), 0, None),
    ]
    assert [relay.name for relay in relays] == ["a.test:587", "b.test:465", "c.test:2525"]
    assert parse_relays("smtp://127.0.0.1:1025") == [Relay(parse_smtp_url("smtp://127.0.0.1:1025"))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "names no relay"),
        ("smtp://a.test?weight=-1", "weight must be a whole number"),
        ("smtp://a.test?rate=lots", "is not like 100/second"),
        ("http://a.test", "smtp://user:pass@host:587"),
    ],
)
def test_relay_list_errors_name_the_rule(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_relays(text)


def test_domain_rates() -> None:
    rates = parse_domain_rates("Gmail.com=20/second, *=5/second;100/minute")
    assert {domain: [str(item) for item in items] for domain, items in rates.items()} == {
        "gmail.com": ["20 per 1 second"],
        "*": ["5 per 1 second", "100 per 1 minute"],
    }
    with pytest.raises(ValueError, match=r"is not like gmail\.com=20/second"):
        parse_domain_rates("gmail.com")


def test_relay_order_by_weight_with_unreachable_ones_last() -> None:
    relays = Relays(parse_relays("smtp://a.test?weight=3 smtp://b.test smtp://c.test?weight=0"), size=1, timeout=1)
    firsts = Counter(relays.order()[0] for _ in range(2000))
    # 3 to 1 between a and b; c (weight 0) only ever as a failover.
    assert set(firsts) == {0, 1} and 1200 < firsts[0] < 1800
    assert all(sorted(relays.order()) == [0, 1, 2] and relays.order()[2] == 2 for _ in range(50))
    relays.unreachable(0)
    assert {tuple(relays.order()) for _ in range(50)} == {(1, 2, 0)}
    relays.unreachable(1)
    assert {tuple(relays.order()) for _ in range(50)} == {(2, 0, 1)}


def test_built_message_has_both_parts_and_the_headers() -> None:
    raw = b"".join(
        build_email(
            sender="Acme <noreply@acme.test>",
            recipient="ann@acme.test",
            rendered=RenderedEmail(subject="Réinitialiser", html="<p>Hi</p>", text="Hi"),
            message_id="<e1.1@acme.test>",
            now=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        )
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
    raw = b"".join(
        build_email(
            sender="Acme <noreply@acme.test>",
            recipient="ann@acme.test",
            rendered=RenderedEmail(subject="Hi", html=None, text=text),
            message_id="<e1.1@acme.test>",
            now=now,
        )
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


@pytest.mark.parametrize(
    ("stage", "reply", "refused"),
    [
        (Stage.RCPT, "550 5.1.1 user unknown", True),
        (Stage.RCPT, "554 5.1.1 user unknown", True),
        (Stage.RCPT, "550 5.1.10 recipient address has null MX", True),
        (Stage.RCPT, "553 5.1.3 bad destination address syntax", True),
        (Stage.RCPT, "550 5.1.7 bad sender mailbox address syntax", False),
        (Stage.RCPT, "553 5.1.8 bad sender's system address", False),
        (Stage.RCPT, "550 5.7.1 message refused as spam", False),
        (Stage.RCPT, "554 5.7.1 relay access denied", False),
        (Stage.RCPT, "552 5.2.2 mailbox full", False),
        (Stage.RCPT, "550 5.2.1 mailbox disabled", False),
        (Stage.RCPT, "550 5.4.1 no answer from host", False),
        (Stage.RCPT, "550 mailbox unavailable", True),
        (Stage.RCPT, "551 user not local", True),
        (Stage.RCPT, "553 mailbox name not allowed", True),
        (Stage.RCPT, "554 transaction failed", False),
        (Stage.RCPT, "552 exceeded storage allocation", False),
        (Stage.RCPT, "450 4.2.1 mailbox busy", False),
        (Stage.MAIL, "550 5.7.1 sender rejected", False),
        (Stage.MAIL, "550 sender rejected", False),
        (Stage.MAIL, "553 5.1.1 sender unknown", False),
        (Stage.DATA, "550 5.1.1 user unknown", True),
        (Stage.DATA, "550 5.1.8 bad sender's system address", False),
        (Stage.DATA, "554 5.7.1 message refused as spam", False),
        (Stage.DATA, "552 message size exceeds the limit", False),
        (Stage.DATA, "554 transaction failed", False),
        (Stage.DATA, "550 mailbox unavailable", False),
        (Stage.DATA, "451 4.3.0 try later", False),
    ],
)
def test_only_a_permanent_refusal_of_the_recipients_address_refuses_the_recipient(
    stage: Stage, reply: str, refused: bool
) -> None:
    code, _, text = reply.partition(" ")
    assert refuses_recipient(stage, int(code), text) is refused


def test_an_enhanced_code_counts_at_the_start_of_the_text_only_where_rfc_2034_puts_it() -> None:
    multiline = "5.1.1 The email account that you tried to reach does not exist.\n5.1.1 Please check the address."
    assert refuses_recipient(Stage.RCPT, 550, multiline) is True
    assert refuses_recipient(Stage.RCPT, 550, "Requested action not taken: 5.7.1 mentioned later") is True
    assert refuses_recipient(Stage.RCPT, 554, "Requested action not taken: 5.1.1 mentioned later") is False


def test_a_results_reply_is_classified_after_its_code() -> None:
    assert SendResult(1, Outcome.PERMANENT, 550, "550 5.1.1 user unknown", Stage.RCPT).refuses_recipient
    assert not SendResult(1, Outcome.PERMANENT, 550, "550 5.7.1 message refused as spam", Stage.RCPT).refuses_recipient
    # Refusals outside a message's transaction name no stage: a template that failed, a greeting the relay refused.
    assert not SendResult(1, Outcome.PERMANENT, None, "template reset: bad").refuses_recipient
    assert not SendResult(1, Outcome.TRANSIENT, 550, "greeting: 550 5.1.1 go away").refuses_recipient


def test_attachments_are_spliced_in_as_the_email_package_writes_them_and_shared() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    files = [
        ("report.pdf", "application/pdf", bytes(range(256)) * 1000),
        ("日本.txt", "text/plain", "今日は\n".encode()),
    ]
    encoded = tuple(
        encode_attachment(Attachment(name=name, content_type=kind, content_base64=base64.b64encode(data).decode()))
        for name, kind, data in files
    )
    pieces = build_email(
        sender="Acme <noreply@acme.test>",
        recipient="ann@acme.test",
        rendered=RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"),
        message_id="<e1.1@acme.test>",
        now=now,
        attachments=encoded,
    )
    raw = b"".join(pieces)
    parsed = message_from_bytes(raw, policy=default)
    attached = [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in parsed.iter_attachments()
    ]
    assert attached == files
    # What the email package writes when it encodes the attachments itself, with the same boundaries.
    alternative = MIMEMultipart(
        "alternative", _subparts=[MIMEText("Hi", "plain", "utf-8"), MIMEText("<p>Hi</p>", "html", "utf-8")]
    )
    alternative.set_boundary(str(next(parsed.iter_parts()).get_boundary()))
    parts = []
    for name, kind, data in files:
        part = MIMEBase(*kind.split("/"))
        part.set_payload(data)
        encoders.encode_base64(part)
        part.add_header("Content-Disposition", "attachment", filename=name if name.isascii() else ("utf-8", "", name))
        parts.append(part)
    expected = MIMEMultipart("mixed", str(parsed.get_boundary()), _subparts=[alternative, *parts])
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        expected[name] = str(parsed[name])
    assert raw == expected.as_bytes(policy=compat32.clone(linesep="\r\n"))
    # Each message of a batch carries the batch's one encoding of an attachment, not a copy of its own.
    assert [piece for piece in pieces if len(piece) > 100_000] == [encoded[0].body]
    assert any(piece is encoded[0].body for piece in pieces)

import json
from email import message_from_bytes
from email.policy import default

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.bounce_samples import COMPLAINT, DELAYED, EXIM, PERMANENT, POSTFIX, SENDMAIL, Sample
from tests.support.builders import apply_spec, make_workspace, password_reset_spec
from tests.support.message_states import State, state
from tests.support.sent_messages import DOMAIN, LATER, NOW, sent_message
from tripmail.bounces.reports import Recorded, ReportOutcome, read_report, record_report
from tripmail.config import Settings
from tripmail.delivery.envelopes import prepare_envelopes
from tripmail.delivery.verp import parse_verp_address, verp_address
from tripmail.ids import new_id
from tripmail.ingest.recording import record_event
from tripmail.models import MessageAttempt, MessageStatus, WebhookDelivery, Workspace
from tripmail.schemas.trigger import Audience, TriggerRequest
from tripmail.webhooks.delivery_events import Subscriptions, add_endpoint

SECRET = "a" * 64


def test_a_return_path_names_its_message_and_verifies_with_its_workspace_secret_only() -> None:
    address = verp_address(1234, SECRET, DOMAIN)
    parsed = parse_verp_address(address)

    assert address.startswith("bounces+1234-") and address.endswith(f"@{DOMAIN}")
    assert parsed is not None and (parsed.message_id, parsed.domain) == (1234, DOMAIN)
    assert parsed.signed_by(SECRET)
    assert not parsed.signed_by("b" * 64)


def test_a_return_path_for_another_message_with_a_copied_signature_does_not_verify() -> None:
    signature = verp_address(1234, SECRET, DOMAIN).split("-")[1].split("@")[0]
    forged = parse_verp_address(f"bounces+1235-{signature}@{DOMAIN}")

    assert forged is not None and not forged.signed_by(SECRET)


def test_a_return_path_is_found_in_a_header_value_whatever_the_case_of_its_signature() -> None:
    address = verp_address(7, SECRET, DOMAIN)
    parsed = parse_verp_address(f"Bounces <{address.upper()}>")

    assert parsed is not None and parsed.message_id == 7 and parsed.signed_by(SECRET)


@pytest.mark.parametrize(
    "address", ["noreply@acme.test", "bounces+12@acme.test", "bounces+x-abc@acme.test", "xbounces+1-abc@acme.test"]
)
def test_other_addresses_are_no_return_path(address: str) -> None:
    assert parse_verp_address(address) is None


def test_the_bounce_domain_setting_is_a_domain_name() -> None:
    assert Settings(bounce_domain=" Bounces.Acme.TEST ").bounce_domain == "bounces.acme.test"
    assert Settings(bounce_domain="").bounce_domain is None
    with pytest.raises(ValidationError, match="TRIPMAIL_BOUNCE_DOMAIN"):
        Settings(bounce_domain="bounces@acme.test")


@pytest.mark.parametrize("sample", PERMANENT.values(), ids=PERMANENT.keys())
def test_each_mta_format_reports_its_recipient_as_failed_for_good(sample: Sample) -> None:
    report = read_report(sample.adapted(return_path="bounces+1-abc@b.test", recipient="ann@example.com"))

    assert report.permanent == {"ann@example.com"}
    assert report.temporary == frozenset()
    assert "bounces+1-abc@b.test" in [address.strip("<>") for address in report.return_paths]
    assert not report.complaint


def test_a_dsn_gives_its_diagnostic_and_quotes_the_original_message_id() -> None:
    report = read_report(SENDMAIL.adapted(recipient="ann@example.com", message_id="<e1.5@acme.test>"))

    assert report.diagnostic("ann@example.com") == "status 5.1.1"
    assert report.original_message_ids == ("<e1.5@acme.test>",)
    assert report.reporter == "example.com"


def test_a_plain_text_bounce_gives_the_lines_about_its_recipient_as_diagnostic() -> None:
    report = read_report(EXIM.adapted(recipient="ann@example.com"))

    assert "553 5.1.1 unknown or illegal user" in report.diagnostic("ann@example.com")
    assert report.diagnostic("ann@example.com").startswith("ann@example.com: SMTP error from remote mailer")


def test_a_delay_warning_is_a_temporary_failure() -> None:
    report = read_report(DELAYED.adapted(recipient="ann@example.com"))

    assert report.permanent == frozenset()
    assert report.temporary == {"ann@example.com"}


def test_an_arf_abuse_report_is_a_complaint_naming_the_original_envelope_sender() -> None:
    report = read_report(COMPLAINT.adapted(return_path="bounces+1-abc@b.test", recipient="ann@example.com"))

    assert report.complaint and report.feedback_type == "abuse"
    assert "<bounces+1-abc@b.test>" in report.return_paths
    assert report.original_message_ids == ("8787KJKJ3K4J3K4J3K4J3.mail@example.net",)


def test_a_not_spam_feedback_report_is_no_complaint() -> None:
    raw = COMPLAINT.adapted(recipient="ann@example.com").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")

    assert not read_report(raw).complaint


@pytest.fixture
def workspace_id(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        return make_workspace(session, password_reset_spec("acme"))


def record(sessions: sessionmaker[Session], raw: bytes, *recipients: str) -> Recorded:
    with sessions.begin() as session:
        return record_report(session, read_report(raw, recipients), now=LATER)


@pytest.mark.parametrize("sample", PERMANENT.values(), ids=PERMANENT.keys())
def test_a_bounce_to_a_return_path_bounces_its_message_and_suppresses_the_address(
    sessions: sessionmaker[Session], workspace_id: int, sample: Sample
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")

    recorded = record(sessions, sample.adapted(return_path=sent.return_path, recipient="ann@example.com"))

    assert (recorded.outcome, recorded.message_id) == (ReportOutcome.BOUNCED, sent.id)
    after = state(sessions, sent.id)
    assert after.status == MessageStatus.BOUNCED
    assert after.reply is not None and after.reply.startswith("bounce reported by ")
    assert after.attempts == ["bounced"]
    assert after.suppressions == [("ann@example.com", "bounce")]


def test_the_same_bounce_twice_changes_nothing_the_second_time(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")
    raw = POSTFIX.adapted(return_path=sent.return_path, recipient="ann@example.com")
    record(sessions, raw)
    first = state(sessions, sent.id)

    again = record(sessions, raw)

    assert (again.outcome, again.detail) == (ReportOutcome.IGNORED, "recorded already")
    assert state(sessions, sent.id) == first


def test_the_envelope_recipient_of_a_bounce_is_its_return_path(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")

    recorded = record(sessions, POSTFIX.adapted(recipient="ann@example.com"), sent.return_path)

    assert (recorded.outcome, recorded.message_id) == (ReportOutcome.BOUNCED, sent.id)


def test_a_bounce_without_a_return_path_is_matched_by_the_original_message_id(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")

    recorded = record(sessions, SENDMAIL.adapted(recipient="ann@example.com", message_id=sent.message_id_header))

    assert (recorded.outcome, recorded.message_id) == (ReportOutcome.BOUNCED, sent.id)
    assert state(sessions, sent.id).reply == "bounce reported by example.com: status 5.1.1"


def test_a_forged_signature_changes_nothing_even_with_a_true_message_id(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")
    forged = sent.return_path.replace("-", "-0", 1)
    before = state(sessions, sent.id)

    recorded = record(
        sessions, POSTFIX.adapted(return_path=forged, recipient="ann@example.com", message_id=sent.message_id_header)
    )

    assert recorded.outcome == ReportOutcome.UNMATCHED
    assert "signature does not verify" in recorded.detail
    assert state(sessions, sent.id) == before


def test_another_workspaces_secret_does_not_sign_for_this_one(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("other"))
        other_secret = session.scalars(select(Workspace.unsubscribe_secret).where(Workspace.key == "other")).one()

    recorded = record(
        sessions, POSTFIX.adapted(return_path=verp_address(sent.id, other_secret, DOMAIN), recipient="ann@example.com")
    )

    assert recorded.outcome == ReportOutcome.UNMATCHED
    assert state(sessions, sent.id).status == MessageStatus.SENT


def test_a_report_about_no_message_of_tripmail_is_unmatched(sessions: sessionmaker[Session], workspace_id: int) -> None:
    unknown_id = record(sessions, SENDMAIL.adapted(recipient="ann@example.com", message_id="<e1.999999@acme.test>"))
    nothing = record(sessions, EXIM.adapted(recipient="ann@example.com"))
    not_mail = record(sessions, b"\x00\xff garbage, no headers at all")

    assert [unknown_id.outcome, nothing.outcome, not_mail.outcome] == [ReportOutcome.UNMATCHED] * 3
    assert "is none of Tripmail's messages" in unknown_id.detail


def test_a_delay_is_noted_once_and_changes_nothing_else(sessions: sessionmaker[Session], workspace_id: int) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")
    raw = DELAYED.adapted(return_path=sent.return_path, recipient="ann@example.com")

    first = record(sessions, raw)
    second = record(sessions, raw)

    assert (first.outcome, second.outcome) == (ReportOutcome.DELAYED, ReportOutcome.IGNORED)
    after = state(sessions, sent.id)
    assert (after.status, after.attempts, after.suppressions) == (MessageStatus.SENT, ["delayed"], [])
    with sessions() as session:
        note = session.scalars(select(MessageAttempt.smtp_reply).where(MessageAttempt.message_id == sent.id)).one()
    assert note is not None and "Quota exceeded" in note


def test_a_complaint_marks_the_message_complained_and_suppresses_the_address(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")

    recorded = record(sessions, COMPLAINT.adapted(return_path=sent.return_path, recipient="ann@example.com"))

    assert recorded.outcome == ReportOutcome.COMPLAINED
    after = state(sessions, sent.id)
    assert (after.status, after.attempts) == (MessageStatus.COMPLAINED, ["complained"])
    assert after.reply == "complaint (abuse) reported by mail.example.com"
    assert after.suppressions == [("ann@example.com", "complaint")]


def test_a_complaint_quoting_only_the_message_id_is_matched_by_it(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")

    recorded = record(sessions, COMPLAINT.adapted(recipient="ann@example.com", message_id=sent.message_id_header))

    assert (recorded.outcome, recorded.message_id) == (ReportOutcome.COMPLAINED, sent.id)


def test_a_bounce_of_another_address_leaves_the_message_as_it_is(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com")

    recorded = record(sessions, POSTFIX.adapted(return_path=sent.return_path, recipient="bob@example.com"))

    assert recorded.outcome == ReportOutcome.IGNORED
    assert recorded.detail == "it reports failures of bob@example.com, not of ann@example.com"
    assert state(sessions, sent.id) == State(MessageStatus.SENT, None, [], [])


def test_a_bounce_of_a_message_the_relay_never_took_leaves_it_as_it_is(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    sent = sent_message(sessions, workspace_id, "ann@example.com", status=MessageStatus.PENDING)

    recorded = record(sessions, POSTFIX.adapted(return_path=sent.return_path, recipient="ann@example.com"))

    assert (recorded.outcome, recorded.detail) == (ReportOutcome.IGNORED, "the message is pending, left so")
    assert state(sessions, sent.id) == State(MessageStatus.PENDING, None, [], [])


def test_with_a_bounce_domain_the_envelope_sender_is_the_messages_return_path_and_from_stays(
    sessions: sessionmaker[Session], workspace_id: int
) -> None:
    with sessions.begin() as session:
        trigger = TriggerRequest(
            workspace_id=workspace_id, event="FORGOT_PASSWORD", audience=Audience(email="ann@example.com")
        )
        message_ids = record_event(session, new_id(), trigger, now=NOW).ids
    with sessions() as session:
        secret = session.scalars(select(Workspace.unsubscribe_secret)).one()
        [plain] = prepare_envelopes(session, message_ids, now=NOW, public_url="https://x").envelopes
        [verp] = prepare_envelopes(
            session, message_ids, now=NOW, public_url="https://x", bounce_domain=DOMAIN
        ).envelopes

    assert plain.sender == "noreply@acme.example.com"
    assert verp.sender == verp_address(message_ids[0], secret, DOMAIN)
    assert message_from_bytes(b"".join(verp.content), policy=default)["From"] == "Acme <noreply@acme.example.com>"


def test_a_bounce_and_a_complaint_are_announced_to_the_workspaces_endpoints(
    sessions: sessionmaker[Session], workspace_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tripmail.webhooks.delivery_events.SUBSCRIPTIONS", Subscriptions(fresh_s=0))
    with sessions.begin() as session:
        add_endpoint(session, workspace_id, "https://hooks.example/in", event_types=None, now=LATER)
    bounced = sent_message(sessions, workspace_id, "ann@example.com")
    complained = sent_message(sessions, workspace_id, "bob@example.com")

    record(sessions, POSTFIX.adapted(return_path=bounced.return_path, recipient="ann@example.com"))
    record(sessions, COMPLAINT.adapted(return_path=complained.return_path, recipient="bob@example.com"))
    record(sessions, POSTFIX.adapted(return_path=bounced.return_path, recipient="ann@example.com"))  # no news

    with sessions() as session:
        bodies = [
            json.loads(body) for body in session.scalars(select(WebhookDelivery.body).order_by(WebhookDelivery.id))
        ]
    assert [(body["type"], body["data"]["message_id"], body["data"]["status"]) for body in bodies] == [
        ("message.bounced", bounced.id, "bounced"),
        ("message.complained", complained.id, "complained"),
    ]

"""The providers' documented webhook payloads, read into the reports tripmail/bounces/reports.py records."""

import hashlib
import hmac
import json

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from tests.support.bounce_samples import COMPLAINT, SENDMAIL
from tests.support.builders import make_workspace, password_reset_spec
from tests.support.message_states import state
from tests.support.provider_payloads import (
    MAILGUN_COMPLAINED,
    MAILGUN_DELIVERED,
    MAILGUN_PERMANENT,
    MAILGUN_TEMPORARY,
    POSTMARK_COMPLAINT,
    POSTMARK_DELIVERY,
    POSTMARK_HARD,
    POSTMARK_SOFT,
    SENDGRID_EVENTS,
    SES_BOUNCE,
    SES_COMPLAINT,
    SES_DELIVERY,
    SES_TRANSIENT,
    payload,
    sns_notification,
    with_content,
)
from tests.support.sendgrid_signing import sendgrid_key_pair, sendgrid_signature
from tests.support.sent_messages import LATER, sent_message
from tripmail.bounces.providers import mailgun, postmark, sendgrid, ses
from tripmail.bounces.providers.signatures import load_sendgrid_key, mailgun_signed, sendgrid_signed
from tripmail.bounces.reports import Report, ReportOutcome, record_reports
from tripmail.config import Settings
from tripmail.errors import InvalidRequest
from tripmail.models import MessageStatus

ANN = "ann@example.com"
MESSAGE_ID = "<0190b1.42@acme.example.com>"


def ses_report(documented: object) -> Report | None:
    body = ses.read_body(json.dumps(documented).encode())
    assert isinstance(body, ses.SesNotification)
    return ses.to_report(body)


def test_a_permanent_ses_bounce_fails_its_recipient_for_good_and_names_the_original() -> None:
    report = ses_report(payload(SES_BOUNCE.path))

    assert report is not None and not report.complaint
    assert (report.permanent, report.temporary) == (frozenset({"jane@example.com"}), frozenset())
    assert report.original_message_ids == ("<custom-message-ID>",)
    assert report.return_paths == ("john@example.com",)
    assert report.diagnostic("jane@example.com") == "550 5.1.1 <jane@example.com>... User"


def test_a_transient_ses_bounce_fails_its_recipient_for_now() -> None:
    report = ses_report(payload(SES_TRANSIENT.path))

    assert report is not None and (report.permanent, report.temporary) == (frozenset(), frozenset({"jane@example.com"}))


def test_an_ses_complaint_complains_and_not_spam_does_not() -> None:
    documented = payload(SES_COMPLAINT.path)
    report = ses_report(documented)
    documented["complaint"]["complaintFeedbackType"] = "not-spam"

    assert report is not None and report.complaint and report.feedback_type == "abuse"
    assert ses_report(documented) is None


def test_an_ses_delivery_has_nothing_to_record() -> None:
    assert ses_report(payload(SES_DELIVERY.path)) is None


def test_an_sns_notification_carries_the_ses_notification_in_its_message() -> None:
    envelope = ses.read_body(json.dumps(sns_notification(payload(SES_BOUNCE.path))).encode())

    assert isinstance(envelope, ses.SnsMessage) and envelope.type == "Notification"
    report = ses.to_report(ses.notification_in(envelope))
    assert report is not None and report.permanent == {"jane@example.com"}


def test_an_sns_message_that_is_no_ses_notification_is_refused_naming_the_field() -> None:
    plain = ses.read_body(json.dumps(payload("ses/sns_notification.json")).encode())
    no_bounce = ses.read_body(json.dumps(sns_notification({"notificationType": "Bounce", "mail": {}})).encode())
    assert isinstance(plain, ses.SnsMessage) and isinstance(no_bounce, ses.SnsMessage)

    with pytest.raises(InvalidRequest) as not_json:
        ses.notification_in(plain)
    with pytest.raises(InvalidRequest) as incomplete:
        ses.notification_in(no_bounce)

    assert not_json.value.field == "Message"
    assert incomplete.value.field == "Message" and "bounce object" in incomplete.value.detail
    with pytest.raises(ValidationError, match="Type"):
        ses.read_body(b'{"Type": "Something"}')


def postmark_report(documented: object) -> Report | None:
    return postmark.to_report(postmark.PostmarkEvent.model_validate(documented))


def test_a_postmark_hard_bounce_fails_for_good_matched_by_the_report_in_its_content() -> None:
    dump = SENDMAIL.adapted(recipient=ANN, message_id=MESSAGE_ID)
    report = postmark_report(with_content(POSTMARK_HARD.adapted(recipient=ANN), dump))

    assert report is not None and report.permanent == {ANN} and not report.complaint
    assert report.original_message_ids == (MESSAGE_ID,)
    assert report.diagnostic(ANN) == "HardBounce: Test bounce details"


def test_a_postmark_soft_bounce_fails_for_now_unless_postmark_made_the_address_inactive() -> None:
    soft = POSTMARK_SOFT.adapted(recipient=ANN)
    report = postmark_report(soft)
    final = postmark_report(soft | {"Inactive": True})

    assert report is not None and (report.permanent, report.temporary) == (frozenset(), frozenset({ANN}))
    assert final is not None and (final.permanent, final.temporary) == (frozenset({ANN}), frozenset())


def test_a_postmark_spam_complaint_complains_and_a_delivery_has_nothing_to_record() -> None:
    complaint = postmark_report(
        with_content(POSTMARK_COMPLAINT.adapted(recipient=ANN), COMPLAINT.adapted(recipient=ANN, message_id=MESSAGE_ID))
    )

    assert complaint is not None and complaint.complaint and complaint.original_message_ids == (MESSAGE_ID,)
    assert postmark_report(payload(POSTMARK_DELIVERY.path)) is None
    # Without the bounce content there is nothing to match by; Postmark's own MessageID is not Tripmail's.
    bare = postmark_report(payload(POSTMARK_HARD.path) | {"Content": None})
    assert bare is not None and (bare.original_message_ids, bare.return_paths) == ((), ())


def test_a_postmark_bounce_without_its_address_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidRequest) as refused:
        postmark_report({key: value for key, value in payload(POSTMARK_HARD.path).items() if key != "Email"})

    assert refused.value.field == "Email"


def mailgun_report(documented: object) -> Report | None:
    return mailgun.to_report(mailgun.MailgunWebhook.model_validate(documented))


def test_mailgun_failures_by_severity_and_complaints() -> None:
    permanent = mailgun_report(MAILGUN_PERMANENT.adapted(recipient=ANN, message_id=MESSAGE_ID))
    temporary = mailgun_report(MAILGUN_TEMPORARY.adapted(recipient=ANN, message_id=MESSAGE_ID))
    complained = mailgun_report(MAILGUN_COMPLAINED.adapted(recipient=ANN, message_id=MESSAGE_ID))

    assert permanent is not None and (permanent.permanent, permanent.temporary) == (frozenset({ANN}), frozenset())
    # Mailgun echoes the Message-ID without its angle brackets.
    assert permanent.original_message_ids == (MESSAGE_ID,)
    assert permanent.diagnostic(ANN) == "605 Not delivering to previously bounced address"
    assert temporary is not None and (temporary.permanent, temporary.temporary) == (frozenset(), frozenset({ANN}))
    assert temporary.diagnostic(ANN).startswith("452 4.2.2 The email account that you tried to reach is over quota.")
    assert complained is not None and complained.complaint
    assert mailgun_report(payload(MAILGUN_DELIVERED.path)) is None


def test_each_sendgrid_event_of_the_documented_batch_is_read_by_its_kind() -> None:
    events = sendgrid.SendgridEvents.validate_python(SENDGRID_EVENTS.adapted(recipient=ANN, message_id=MESSAGE_ID))

    reports = [sendgrid.to_report(event, index) for index, event in enumerate(events)]

    kinds = [
        None if r is None else "complaint" if r.complaint else "permanent" if r.permanent else "temporary"
        for r in reports
    ]
    # processed, deferred, delivered, open, bounce, bounce (blocked), dropped (Bounced Address), spamreport
    assert kinds == [None, "temporary", None, None, "permanent", "temporary", "permanent", "complaint"]
    bounce = reports[4]
    assert bounce is not None and bounce.original_message_ids == (MESSAGE_ID,)
    assert bounce.diagnostic(ANN) == "500 unknown recipient"


def test_a_sendgrid_bounce_without_its_address_is_refused_naming_the_event() -> None:
    events = sendgrid.SendgridEvents.validate_python([{"event": "delivered"}, {"event": "bounce", "type": "bounce"}])

    with pytest.raises(InvalidRequest) as refused:
        [sendgrid.to_report(event, index) for index, event in enumerate(events)]

    assert refused.value.field == "1.email"


def test_a_mailgun_signature_verifies_with_its_signing_key_only() -> None:
    signature = hmac.new(b"key-1", b"1529006854" + b"a8ce0edb", hashlib.sha256).hexdigest()

    assert mailgun_signed("key-1", timestamp="1529006854", token="a8ce0edb", signature=signature)
    assert not mailgun_signed("key-2", timestamp="1529006854", token="a8ce0edb", signature=signature)
    assert not mailgun_signed("key-1", timestamp="1529006855", token="a8ce0edb", signature=signature)


def test_a_sendgrid_signature_verifies_over_the_timestamp_and_the_exact_body() -> None:
    private, shown = sendgrid_key_pair()
    key = load_sendgrid_key(shown)
    body = json.dumps(payload(SENDGRID_EVENTS.path)).encode()
    signature = sendgrid_signature(private, "1600112502", body)

    assert sendgrid_signed(key, timestamp="1600112502", body=body, signature=signature)
    assert not sendgrid_signed(key, timestamp="1600112503", body=body, signature=signature)
    assert not sendgrid_signed(key, timestamp="1600112502", body=body + b" ", signature=signature)
    assert not sendgrid_signed(key, timestamp="1600112502", body=body, signature="not base64!")
    assert not sendgrid_signed(load_sendgrid_key(sendgrid_key_pair()[1]), timestamp="1600112502", body=body,
                               signature=signature)  # fmt: skip


def test_the_sendgrid_verification_key_setting_is_a_public_key() -> None:
    _, shown = sendgrid_key_pair()

    assert Settings(sendgrid_verification_key=shown).sendgrid_verification_key == shown
    assert Settings(sendgrid_verification_key=" ").sendgrid_verification_key is None
    with pytest.raises(ValidationError, match="TRIPMAIL_SENDGRID_VERIFICATION_KEY"):
        Settings(sendgrid_verification_key="MFkwEwYHKoZIzj0CAQ")


def test_a_provider_report_matches_only_messages_of_the_workspace_it_was_posted_for(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        acme, other = (make_workspace(session, password_reset_spec(key)) for key in ("acme", "other"))
    sent = sent_message(sessions, acme, ANN)
    report = mailgun_report(MAILGUN_PERMANENT.adapted(recipient=ANN, message_id=sent.message_id_header))
    by_return_path = Report(
        complaint=True, permanent=frozenset(), temporary=frozenset(), return_paths=(sent.return_path,),
        original_message_ids=(), reporter="test",
    )  # fmt: skip

    with sessions.begin() as session:
        elsewhere = record_reports(session, [report, by_return_path, None], now=LATER, workspace_id=other)
    assert elsewhere == {ReportOutcome.UNMATCHED: 2, ReportOutcome.IGNORED: 1}
    assert state(sessions, sent.id).status == MessageStatus.SENT

    with sessions.begin() as session:
        own = record_reports(session, [report, report], now=LATER, workspace_id=acme)
    assert own == {ReportOutcome.BOUNCED: 1, ReportOutcome.IGNORED: 1}
    after = state(sessions, sent.id)
    assert (after.status, after.suppressions) == (MessageStatus.BOUNCED, [(ANN, "bounce")])
    assert after.reply == "bounce reported by Mailgun: 605 Not delivering to previously bounced address"

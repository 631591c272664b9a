"""Amazon SES notifications, delivered by Amazon SNS to an HTTP(S) subscription.

SNS posts an envelope (`Type`: SubscriptionConfirmation, Notification, UnsubscribeConfirmation) whose `Message` is
the SES notification as a JSON string; with raw message delivery on, the body is the SES notification itself. SES
echoes the original headers (`mail.commonHeaders.messageId`, `mail.headers`) when the identity's notifications
include them, and the envelope sender as `mail.source`.
"""

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tripmail.bounces.reports import Report, bracketed_message_id
from tripmail.errors import FieldError, InvalidRequest

REPORTER = "Amazon SES"


class _Wire(BaseModel):
    # Providers add fields as they like; only what the mapper reads is checked.
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class SesHeader(_Wire):
    name: str
    value: str


class SesCommonHeaders(_Wire):
    message_id: str | None = Field(default=None, alias="messageId")


class SesMail(_Wire):
    # The envelope sender (MAIL FROM): a VERP return path when Tripmail sent with one.
    source: str = ""
    headers: list[SesHeader] = Field(default_factory=list)
    common_headers: SesCommonHeaders | None = Field(default=None, alias="commonHeaders")


class SesBouncedRecipient(_Wire):
    email_address: str = Field(alias="emailAddress")
    status: str | None = None
    diagnostic_code: str | None = Field(default=None, alias="diagnosticCode")


class SesBounce(_Wire):
    bounce_type: str = Field(alias="bounceType")
    bounce_sub_type: str = Field(default="", alias="bounceSubType")
    bounced_recipients: list[SesBouncedRecipient] = Field(alias="bouncedRecipients")
    feedback_id: str | None = Field(default=None, alias="feedbackId")


class SesComplainedRecipient(_Wire):
    email_address: str = Field(alias="emailAddress")


class SesComplaint(_Wire):
    complained_recipients: list[SesComplainedRecipient] = Field(alias="complainedRecipients")
    feedback_id: str | None = Field(default=None, alias="feedbackId")
    complaint_feedback_type: str | None = Field(default=None, alias="complaintFeedbackType")


class SesNotification(_Wire):
    """A feedback notification (`notificationType`) or a configuration set's event (`eventType`)."""

    notification_type: str | None = Field(default=None, alias="notificationType")
    event_type: str | None = Field(default=None, alias="eventType")
    mail: SesMail
    bounce: SesBounce | None = None
    complaint: SesComplaint | None = None

    @property
    def kind(self) -> str:
        return self.notification_type or self.event_type or ""

    @model_validator(mode="after")
    def _carries_its_kind(self) -> "SesNotification":
        if not self.kind:
            raise ValueError("give notificationType (or eventType, from a configuration set)")
        if self.kind == "Bounce" and self.bounce is None:
            raise ValueError("a Bounce notification carries a bounce object")
        if self.kind == "Complaint" and self.complaint is None:
            raise ValueError("a Complaint notification carries a complaint object")
        return self


class SnsMessage(_Wire):
    type: Literal["SubscriptionConfirmation", "Notification", "UnsubscribeConfirmation"] = Field(alias="Type")
    message_id: str = Field(default="", alias="MessageId")
    topic_arn: str = Field(default="", alias="TopicArn")
    message: str = Field(default="", alias="Message")
    subscribe_url: str | None = Field(default=None, alias="SubscribeURL")


def read_body(raw: bytes) -> SnsMessage | SesNotification:
    """The SNS envelope, or the bare SES notification of a raw-delivery subscription; InvalidRequest names the
    field at fault."""
    data = _json_object(raw, "body")
    if "Type" in data:
        return SnsMessage.model_validate(data)
    return SesNotification.model_validate(data)


def notification_in(envelope: SnsMessage) -> SesNotification:
    """The SES notification an SNS Notification carries in `Message`."""
    data = _json_object(envelope.message.encode(), "Message")
    try:
        return SesNotification.model_validate(data)
    except ValidationError as exc:
        errors = [
            FieldError(field=".".join(["Message", *map(str, error["loc"])]), message=error["msg"])
            for error in exc.errors()
        ]
        raise InvalidRequest.listing(errors) from exc


def _json_object(raw: bytes, field: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"{field}: not a JSON object: {exc}", field=field) from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"{field}: not a JSON object", field=field)
    return data


def _original_message_ids(mail: SesMail) -> tuple[str, ...]:
    found = [mail.common_headers.message_id] if mail.common_headers and mail.common_headers.message_id else []
    found += [header.value for header in mail.headers if header.name.lower() == "message-id"]
    return tuple(dict.fromkeys(bracketed_message_id(value) for value in found))


def _diagnostic(recipient: SesBouncedRecipient, bounce: SesBounce) -> str:
    if recipient.diagnostic_code:
        # `smtp; 550 5.1.1 ...`: the reply without its type, as a DSN's Diagnostic-Code is read.
        typed, separator, reply = recipient.diagnostic_code.partition(";")
        return " ".join((reply if separator and " " not in typed.strip() else recipient.diagnostic_code).split())
    if recipient.status:
        return f"status {recipient.status}"
    return f"{bounce.bounce_type} bounce ({bounce.bounce_sub_type or 'no subtype'})"


def to_report(notification: SesNotification) -> Report | None:
    """What the notification says: a Permanent bounce fails its recipients for good, a Transient or Undetermined one
    for now, a complaint (other than `not-spam`) complains; anything else (Delivery, Send, Open...) is None."""
    mail = notification.mail
    return_paths = (mail.source,) if mail.source else ()
    message_ids = _original_message_ids(mail)
    if notification.kind == "Bounce" and notification.bounce is not None:
        bounce = notification.bounce
        addresses = frozenset(recipient.email_address.lower() for recipient in bounce.bounced_recipients)
        permanent = bounce.bounce_type == "Permanent"
        return Report(
            complaint=False,
            permanent=addresses if permanent else frozenset(),
            temporary=frozenset() if permanent else addresses,
            return_paths=return_paths,
            original_message_ids=message_ids,
            reporter=REPORTER,
            report_id=bounce.feedback_id,
            diagnostics={r.email_address.lower(): _diagnostic(r, bounce) for r in bounce.bounced_recipients},
        )
    if notification.kind == "Complaint" and notification.complaint is not None:
        complaint = notification.complaint
        if complaint.complaint_feedback_type == "not-spam":
            return None
        return Report(
            complaint=True,
            permanent=frozenset(),
            temporary=frozenset(),
            return_paths=return_paths,
            original_message_ids=message_ids,
            reporter=REPORTER,
            report_id=complaint.feedback_id,
            feedback_type=complaint.complaint_feedback_type or "complaint",
        )
    return None

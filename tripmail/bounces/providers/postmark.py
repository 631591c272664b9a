"""Postmark's bounce and spam complaint webhooks (one JSON object per POST).

Postmark's `MessageID` is its own id, which Tripmail does not store; the original's Message-ID and return path
show only in `Content`, the raw bounce or abuse report, which the webhook carries when its "Include bounce
content" option is on. That report is read as `tripmail bounces` reads one, for where it points; what it says is
Postmark's classification.
"""

from pydantic import BaseModel, ConfigDict, Field

from tripmail.bounces.reports import Report, read_report
from tripmail.errors import InvalidRequest

REPORTER = "Postmark"
# Bounce types that say the address itself is bad.
HARD_TYPES = frozenset({"HardBounce", "BadEmailAddress"})
# Bounce types that say delivery failed this time; Postmark marks the address Inactive when it stops sending to
# it, which makes any of them final too.
SOFT_TYPES = frozenset({"Transient", "SoftBounce", "DnsError", "Blocked", "SpamNotification", "DMARCPolicy"})
COMPLAINT = "SpamComplaint"


class PostmarkEvent(BaseModel):
    """A Bounce or SpamComplaint record; other record types (Delivery, Open, Click...) are accepted and ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    # Absent in Postmark's older bounce webhook examples, which were bounces all the same.
    record_type: str | None = Field(default=None, alias="RecordType")
    id: int | str | None = Field(default=None, alias="ID")
    type: str | None = Field(default=None, alias="Type")
    email: str | None = Field(default=None, alias="Email")
    description: str = Field(default="", alias="Description")
    details: str = Field(default="", alias="Details")
    inactive: bool = Field(default=False, alias="Inactive")
    content: str | None = Field(default=None, alias="Content")

    @property
    def kind(self) -> str:
        if self.record_type:
            return self.record_type
        return COMPLAINT if self.type == COMPLAINT else "Bounce"


def to_report(event: PostmarkEvent) -> Report | None:
    """A spam complaint complains; a hard bounce, or a soft one after which Postmark made the address Inactive,
    fails it for good; another soft bounce fails it for now; anything else is None."""
    if event.kind not in ("Bounce", COMPLAINT):
        return None
    if event.email is None:
        raise InvalidRequest(f"Email: a {event.kind} record names the address it is about", field="Email")
    address = event.email.lower()
    complaint = event.kind == COMPLAINT or event.type == COMPLAINT
    permanent = not complaint and (event.type in HARD_TYPES or (event.type in SOFT_TYPES and event.inactive))
    temporary = not complaint and not permanent and event.type in SOFT_TYPES
    if not (complaint or permanent or temporary):
        return None
    # The raw report, for the return path it went to and the original's Message-ID it quotes.
    quoted = read_report(event.content.encode("utf-8", "replace")) if event.content else None
    diagnostic = " ".join((event.details or event.description or f"{event.type} bounce").split())
    return Report(
        complaint=complaint,
        permanent=frozenset({address}) if permanent else frozenset(),
        temporary=frozenset({address}) if temporary else frozenset(),
        return_paths=quoted.return_paths if quoted else (),
        original_message_ids=quoted.original_message_ids if quoted else (),
        reporter=REPORTER,
        report_id=None if event.id is None else f"{REPORTER} {event.kind} {event.id}",
        diagnostics={address: f"{event.type}: {diagnostic}"},
        feedback_type="spam complaint" if complaint else None,
    )

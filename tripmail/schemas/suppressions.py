"""What the suppression list answers: the addresses a workspace no longer mails, and why."""

from datetime import datetime

from pydantic import BaseModel, Field


class SuppressionView(BaseModel):
    email: str
    source: str = Field(
        description="`smtp`: the server refused the address for good; `bounce`: a bounce that came back later; "
        "`complaint`: the recipient reported the mail as spam; `manual`: an operator's entry."
    )
    reason: str = Field(
        description="The SMTP reply that refused the address, the bounce's diagnostic or the complaint, or the reason "
        "the operator gave."
    )
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionView]
    # Pass as `after` for the next page; None on the last page.
    next_after: int | None

"""What the webhook endpoint routes answer: an endpoint as the workspace registered it, and its secret once."""

from datetime import datetime

from pydantic import BaseModel, Field


class EndpointView(BaseModel):
    id: int
    url: str
    event_types: list[str] = Field(description="The delivery event types POSTed to it, e.g. `message.failed`.")
    enabled: bool
    created_at: datetime


class CreatedEndpoint(EndpointView):
    secret: str = Field(
        description="`whsec_` and the base64 key that signs each POST (Standard Webhooks); shown only in this answer."
    )


class EndpointList(BaseModel):
    items: list[EndpointView]

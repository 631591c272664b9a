"""POST /v1/templates/{key}/preview: the one route that renders, for a person checking a template, not for mail."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, bearer
from api.bodies import BoundedRoute
from api.problems import problem_responses
from tripmail.rendering.previews import preview_template
from tripmail.rendering.templates import RenderedEmail

router = APIRouter(tags=["templates"], route_class=BoundedRoute)

TemplateReader = Annotated[Principal, Depends(bearer("templates:read"))]


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, JsonValue] = Field(default_factory=dict, description="What an event's `data` would carry.")
    contact: dict[str, JsonValue] = Field(
        default_factory=dict, description="The contact as templates see it: `email`, `first_name`, other fields."
    )
    event: dict[str, JsonValue] = Field(default_factory=dict, description="`name`, `key`, `received_at`.")


class Preview(BaseModel):
    subject: str
    html: str | None
    text: str | None


@router.post("/v1/templates/{key}/preview", responses=problem_responses(401, 403, 404, 413, 422, 429))
async def preview(key: str, body: PreviewRequest, principal: TemplateReader, request: Request) -> Preview:
    """Render the template with sample data; a template that fails names the part and line (422)."""

    def render() -> RenderedEmail:
        with request.app.state.sessions() as session:
            return preview_template(
                session, principal.workspace_id, key, data=body.data, contact=body.contact, event=body.event
            )

    rendered = await run_in_threadpool(render)
    return Preview(subject=rendered.subject, html=rendered.html, text=rendered.text)

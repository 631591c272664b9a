"""GET, POST /v1/webhook-endpoints and DELETE /v1/webhook-endpoints/{endpoint_id}: where the workspace's delivery
events go (tripmail/webhooks/delivery_events.py)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, bearer
from api.bodies import BoundedRoute
from api.problems import problem_responses
from tripmail.ids import utcnow
from tripmail.schemas.webhook_endpoints import CreatedEndpoint, EndpointList
from tripmail.webhooks.delivery_events import (
    MAX_URL_LENGTH,
    DeliveryEventType,
    add_endpoint,
    list_endpoints,
    remove_endpoint,
)
from tripmail.webhooks.egress import check_webhook_url

router = APIRouter(tags=["webhook endpoints"], route_class=BoundedRoute)

# Their own scopes: an endpoint receives every recipient address of the workspace's mail, which a token that sends
# events, or manages contacts, need not be able to direct anywhere.
WebhookReader = Annotated[Principal, Depends(bearer("webhooks:read"))]
WebhookWriter = Annotated[Principal, Depends(bearer("webhooks:write"))]

# The ids an INTEGER column holds on every backend.
MAX_ID = 2**31 - 1


class NewEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=MAX_URL_LENGTH,
        description="An http or https URL, POSTed each event; its host must be public (not loopback, private, "
        "link-local, ...), unless the operator allows its network.",
    )
    event_types: list[DeliveryEventType] | None = Field(
        default=None, min_length=1, description="The event types it receives; every one when left out."
    )
    enabled: bool = Field(default=True, description="A disabled endpoint is sent nothing.")


@router.get("/v1/webhook-endpoints", responses=problem_responses(401, 403, 429))
async def get_webhook_endpoints(principal: WebhookReader, request: Request) -> EndpointList:
    """The workspace's webhook endpoints, oldest first, without their secrets."""

    def read() -> EndpointList:
        with request.app.state.sessions() as session:
            return EndpointList(items=list_endpoints(session, principal.workspace_id))

    return await run_in_threadpool(read)


@router.post("/v1/webhook-endpoints", status_code=201, responses=problem_responses(401, 403, 413, 422, 429))
async def post_webhook_endpoint(body: NewEndpoint, principal: WebhookWriter, request: Request) -> CreatedEndpoint:
    """Register an endpoint for delivery events, signed as Standard Webhooks with the `secret` of this answer (the
    only answer that shows it). It receives the events of messages whose status changes from a few seconds on."""

    check_webhook_url(body.url, request.app.state.settings.webhook_allowed_networks)

    def add() -> CreatedEndpoint:
        with request.app.state.sessions.begin() as session:
            return add_endpoint(
                session,
                principal.workspace_id,
                body.url,
                event_types=body.event_types,
                enabled=body.enabled,
                now=utcnow(),
            )

    return await run_in_threadpool(add)


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}", status_code=204, responses=problem_responses(401, 403, 404, 422, 429)
)
async def delete_webhook_endpoint(
    endpoint_id: Annotated[int, Path(ge=1, le=MAX_ID)], principal: WebhookWriter, request: Request
) -> Response:
    """Remove an endpoint: it is sent nothing more, not even the events it had still to receive."""

    def remove() -> None:
        with request.app.state.sessions.begin() as session:
            remove_endpoint(session, principal.workspace_id, endpoint_id)

    await run_in_threadpool(remove)
    return Response(status_code=204)

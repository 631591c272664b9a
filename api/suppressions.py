"""GET, POST /v1/suppressions and DELETE /v1/suppressions/{email}: the workspace's suppression list."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, bearer
from api.bodies import BoundedRoute
from api.problems import problem_responses
from tripmail.delivery.suppressions import Added, add_suppressions, list_suppressions, remove_suppression
from tripmail.ids import utcnow
from tripmail.schemas.suppressions import SuppressionPage, SuppressionView

router = APIRouter(tags=["suppressions"], route_class=BoundedRoute)

ContactReader = Annotated[Principal, Depends(bearer("contacts:read"))]
ContactWriter = Annotated[Principal, Depends(bearer("contacts:write"))]

# RFC 5321's longest path: a 64-octet local part, @, a 255-octet domain.
MAX_EMAIL_LENGTH = 320


class NewSuppression(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=MAX_EMAIL_LENGTH, description="Normalised as event contacts are (lower case).")
    reason: str = Field(default="", max_length=1000, description="Why the workspace stops mailing the address.")


@router.get("/v1/suppressions", responses=problem_responses(401, 403, 422, 429))
async def get_suppressions(
    principal: ContactReader,
    request: Request,
    email: Annotated[str | None, Query(max_length=MAX_EMAIL_LENGTH, description="Look one address up.")] = None,
    after: Annotated[int | None, Query(ge=0, description="The previous page's next_after.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SuppressionPage:
    """The addresses the workspace no longer mails, oldest first: bounced (`smtp`) or added by hand (`manual`)."""

    def read() -> SuppressionPage:
        with request.app.state.sessions() as session:
            return list_suppressions(session, principal.workspace_id, email=email, after=after, limit=limit)

    return await run_in_threadpool(read)


@router.post(
    "/v1/suppressions",
    status_code=201,
    responses={
        200: {"model": SuppressionView, "description": "The address was suppressed already; its entry is unchanged."},
        **problem_responses(401, 403, 413, 422, 429),
    },
)
async def post_suppression(
    body: NewSuppression, principal: ContactWriter, request: Request, response: Response
) -> SuppressionView:
    """Stop mailing an address, transactional mail included, until it is deleted from the list."""

    def add() -> Added:
        with request.app.state.sessions.begin() as session:
            [added] = add_suppressions(session, principal.workspace_id, [body.email], reason=body.reason, now=utcnow())
            return added

    added = await run_in_threadpool(add)
    if not added.created:
        response.status_code = 200
    return added.suppression


@router.delete("/v1/suppressions/{email}", status_code=204, responses=problem_responses(401, 403, 404, 422, 429))
async def delete_suppression(
    email: Annotated[str, Path(max_length=MAX_EMAIL_LENGTH)], principal: ContactWriter, request: Request
) -> Response:
    """Mail the address again: the next event to it is sent (messages already recorded `suppressed` stay so)."""

    def remove() -> None:
        with request.app.state.sessions.begin() as session:
            remove_suppression(session, principal.workspace_id, email)

    await run_in_threadpool(remove)
    return Response(status_code=204)

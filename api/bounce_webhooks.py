"""POST /v1/bounce-webhooks/{ses,postmark,mailgun,sendgrid}: bounces and complaints reported by the provider a
workspace relays through, recorded as `tripmail bounces` records a DSN, within the token's workspace only."""

import logging
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, basic_bearer_or_query
from api.bodies import BoundedRoute
from api.problems import problem_responses
from tripmail.bounces.providers import mailgun, postmark, sendgrid, ses
from tripmail.bounces.providers.signatures import load_sendgrid_key, mailgun_signed, sendgrid_signed
from tripmail.bounces.reports import Report, ReportOutcome, record_reports
from tripmail.errors import Forbidden
from tripmail.ids import utcnow

log = logging.getLogger(__name__)

BOUNCES_WRITE = "bounces:write"
BounceWriter = Annotated[Principal, Depends(basic_bearer_or_query(BOUNCES_WRITE))]

router = APIRouter(tags=["bounce webhooks"], route_class=BoundedRoute)


class WebhookSummary(BaseModel):
    """What the request's events did, by outcome (as `tripmail bounces` counts reports)."""

    events: int = Field(description="Events in the request.")
    bounced: int = 0
    complained: int = 0
    delayed: int = 0
    unmatched: int = Field(default=0, description="About no message of the token's workspace.")
    ignored: int = Field(default=0, description="Nothing to record: a delivery, an open, a soft bounce seen before...")
    detail: str | None = None


def _body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    # The body is read raw (SNS posts JSON as text/plain, SendGrid's signature covers the exact bytes) and checked
    # by the provider's wire model, which names each field at fault.
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    responses = problem_responses(*statuses)
    if 403 in responses:
        responses[403] = {
            **responses[403],
            "description": "The token lacks the route's scope, or the provider's signature does not verify.",
        }
    return responses


async def _record(request: Request, principal: Principal, reports: list[Report | None]) -> WebhookSummary:
    """All of a request's reports in one transaction."""

    def record() -> Counter[ReportOutcome]:
        with request.app.state.sessions.begin() as session:
            return record_reports(session, reports, now=utcnow(), workspace_id=principal.workspace_id)

    outcomes = await run_in_threadpool(record)
    return WebhookSummary(events=len(reports), **{outcome.value: count for outcome, count in outcomes.items()})


@router.post(
    "/v1/bounce-webhooks/ses",
    responses=_responses(401, 403, 413, 422, 429),
    openapi_extra=_body(
        "An Amazon SNS message (or, with raw message delivery, the SES notification itself).", {"type": "object"}
    ),
)
async def ses_webhook(principal: BounceWriter, request: Request) -> WebhookSummary:
    """Amazon SES bounce and complaint notifications through an SNS HTTP(S) subscription. A subscription
    confirmation is logged with the URL that confirms it; nothing is fetched from here."""
    body = ses.read_body(await request.body())
    if isinstance(body, ses.SnsMessage):
        if body.type == "SubscriptionConfirmation":
            log.warning(
                "SNS asks to confirm the subscription of workspace %d to %s: open %s",
                principal.workspace_id,
                body.topic_arn,
                body.subscribe_url,
                extra={"workspace_id": principal.workspace_id},
            )
            return WebhookSummary(
                events=0, detail="subscription confirmation logged: open its SubscribeURL from the api's log to confirm"
            )
        if body.type == "UnsubscribeConfirmation":
            return WebhookSummary(events=1, ignored=1, detail="unsubscribe confirmation, nothing to record")
        body = ses.notification_in(body)
    return await _record(request, principal, [ses.to_report(body)])


@router.post(
    "/v1/bounce-webhooks/postmark",
    responses=_responses(401, 403, 413, 422, 429),
    openapi_extra=_body("A Postmark webhook record (Bounce, SpamComplaint; others are ignored).", {"type": "object"}),
)
async def postmark_webhook(principal: BounceWriter, request: Request) -> WebhookSummary:
    """Postmark's bounce and spam complaint webhooks; turn on "Include bounce content", which carries the
    original's Message-ID."""
    event = postmark.PostmarkEvent.model_validate_json(await request.body())
    return await _record(request, principal, [postmark.to_report(event)])


@router.post(
    "/v1/bounce-webhooks/mailgun",
    responses=_responses(401, 403, 413, 422, 429),
    openapi_extra=_body("A Mailgun webhook: signature and event-data.", {"type": "object"}),
)
async def mailgun_webhook(principal: BounceWriter, request: Request) -> WebhookSummary:
    """Mailgun's failed (permanent, temporary) and complained webhooks; signed events verified with
    TRIPMAIL_MAILGUN_SIGNING_KEY when it is set."""
    webhook = mailgun.MailgunWebhook.model_validate_json(await request.body())
    signing_key = request.app.state.settings.mailgun_signing_key
    if signing_key is not None:
        signature = webhook.signature
        if signature is None or not mailgun_signed(
            signing_key.get_secret_value(),
            timestamp=str(signature.timestamp),
            token=signature.token,
            signature=signature.signature,
        ):
            raise Forbidden("the Mailgun signature does not verify with the webhook signing key", field="signature")
    return await _record(request, principal, [mailgun.to_report(webhook)])


@router.post(
    "/v1/bounce-webhooks/sendgrid",
    responses=_responses(401, 403, 413, 422, 429),
    openapi_extra=_body(
        "SendGrid's Event Webhook batch: a JSON array of events.", {"type": "array", "items": {"type": "object"}}
    ),
)
async def sendgrid_webhook(principal: BounceWriter, request: Request) -> WebhookSummary:
    """SendGrid's Event Webhook (bounce, blocked, deferred, dropped, spamreport); signed batches verified with
    TRIPMAIL_SENDGRID_VERIFICATION_KEY when it is set."""
    raw = await request.body()
    verification_key = request.app.state.settings.sendgrid_verification_key
    if verification_key is not None:
        signature = request.headers.get(sendgrid.SIGNATURE_HEADER, "")
        timestamp = request.headers.get(sendgrid.TIMESTAMP_HEADER, "")
        if not sendgrid_signed(load_sendgrid_key(verification_key), timestamp=timestamp, body=raw, signature=signature):
            raise Forbidden(
                "the SendGrid signature does not verify with the verification key", field=sendgrid.SIGNATURE_HEADER
            )
    events = sendgrid.SendgridEvents.validate_json(raw)
    return await _record(request, principal, [sendgrid.to_report(event, index) for index, event in enumerate(events)])

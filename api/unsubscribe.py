"""The unsubscribe links in marketing mail: a page that asks, and the one-click POST (RFC 8058) that records it."""

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.bodies import BoundedRoute
from api.problems import problem_responses
from tripmail.contacts.unsubscribe import contact_of_token, unsubscribe
from tripmail.ids import utcnow

router = APIRouter(tags=["unsubscribe"], route_class=BoundedRoute)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 4em auto">{body}</body></html>
"""


@router.get("/unsubscribe/{token}", response_class=HTMLResponse, responses=problem_responses(404, 422))
def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    """Asks before it changes anything: mail scanners follow links, and a GET must not unsubscribe anyone."""
    with request.app.state.sessions() as session:
        contact = contact_of_token(session, token)
    body = (
        f"<p>Stop marketing email to <b>{escape(contact.email or '')}</b>?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(_PAGE.format(body=body))


@router.post("/unsubscribe/{token}", response_class=HTMLResponse, responses=problem_responses(404, 413, 422))
def unsubscribe_now(token: str, request: Request) -> HTMLResponse:
    """One-click unsubscribe: mail clients POST `List-Unsubscribe=One-Click` here; the contact's email consent
    is withdrawn, so marketing automations skip it (transactional mail still arrives)."""
    with request.app.state.sessions.begin() as session:
        contact = unsubscribe(session, token, now=utcnow())
    body = f"<p><b>{escape(contact.email or '')}</b> will get no more marketing email.</p>"
    return HTMLResponse(_PAGE.format(body=body))

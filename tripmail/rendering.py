"""Templates: Jinja2 in a sandbox; request data goes in as values, never as template source."""

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError
from jinja2 import Template as JinjaTemplate
from jinja2.sandbox import SandboxedEnvironment

from tripmail.errors import InvalidConfig

# HTML parts escape what they insert; subject and text parts are plain text and must not.
_ENVIRONMENTS = {
    True: SandboxedEnvironment(autoescape=True, undefined=ChainableUndefined),
    False: SandboxedEnvironment(autoescape=False, undefined=ChainableUndefined),
}


class RenderError(Exception):
    """A template that failed to render for this particular context."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str | None
    text: str | None


@lru_cache(maxsize=1024)
def _compile(source: str, *, html: bool) -> JinjaTemplate:
    return _ENVIRONMENTS[html].from_string(source)


def check_template(source: str, *, name: str) -> None:
    """Raise InvalidConfig naming the template part and line when the source does not compile."""
    try:
        _ENVIRONMENTS[False].parse(source)
    except TemplateSyntaxError as exc:
        raise InvalidConfig(f"{name}: line {exc.lineno}: {exc.message}") from exc


def template_context(contact: dict[str, Any], data: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """Bare data names (`{{ forgot_password_link }}`) work too; the named parts win over a data key."""
    return {**data, "contact": contact, "data": data, "event": event}


def render_part(source: str, context: dict[str, Any], *, html: bool) -> str:
    try:
        return _compile(source, html=html).render(context)
    except TemplateError as exc:
        raise RenderError(str(exc)) from exc


def render_email(subject: str, html: str | None, text: str | None, context: dict[str, Any]) -> RenderedEmail:
    # A header cannot carry a line break; folding it to a space keeps a multi-line value readable.
    rendered_subject = " ".join(render_part(subject, context, html=False).split())
    return RenderedEmail(
        subject=rendered_subject,
        html=None if html is None else render_part(html, context, html=True),
        text=None if text is None else render_part(text, context, html=False),
    )

"""Templates: Jinja2 in a sandbox; request data goes in as values, never as template source.

The sandbox bounds what a template builds and how long it renders (sandbox.py): past a bound, the render fails
with a RenderError that names the bound, as a template that meets data it cannot handle does.

A template may declare `syntax: apicontent` (altcraft): its `{apicontent.name}` placeholders become
Jinja, and list values render one item per line; or `syntax: velocity` (esputnik): see tripmail/rendering/velocity/.
Either is translated when the template is applied (to check it) and once per process when first compiled.
"""

import re
import traceback
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, TemplateSyntaxError, Undefined
from jinja2 import Template as JinjaTemplate
from markupsafe import Markup, escape

from tripmail.config import get_settings
from tripmail.errors import InvalidConfig
from tripmail.rendering.sandbox import BoundedSandbox, render_within
from tripmail.rendering.velocity import translation
from tripmail.rendering.velocity.filters import FILTERS as VELOCITY_FILTERS

_APICONTENT = re.compile(r"(?<!\{)\{apicontent\.([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")


def _lines_text(value: Any) -> Any:
    return "\n".join(str(item) for item in value) if isinstance(value, list) else value


def _lines_html(value: Any) -> Any:
    return Markup("<br>").join(escape(item) for item in value) if isinstance(value, list) else value


def _value_of(mapping: Any, key: str) -> Any:
    """`{apicontent.items}` is the data's `items` or nothing, never the dict method of that name."""
    return mapping.get(key) if isinstance(mapping, dict) else None


def _or_written(value: Any, written: str) -> Any:
    """Velocity shows a plain reference that has no value as it was written ($name)."""
    return written if value is None or isinstance(value, Undefined) else value


class _KeysFirst(BoundedSandbox):
    """`data.items` is the event's `items` (emailsendx sends one), not the dict method Jinja would find first."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


class _DataOnly(_KeysFirst):
    """Velocity's `.name` and `.get(key)` read a map's keys and a list's items, nothing else: a Python attribute
    (`$data.items` with no `items` key) would show as a Python object where Velocity shows the reference as written."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return self.undefined(obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, dict | list):
            with suppress(LookupError, TypeError):
                return obj[argument]
        return self.undefined(obj=obj, name=str(argument))


def _environment(*, html: bool, velocity: bool) -> BoundedSandbox:
    # HTML parts escape what they insert; subject and text parts are plain text and must not.
    environment = (_DataOnly if velocity else _KeysFirst)(autoescape=html, undefined=ChainableUndefined)
    environment.add_filter("lines", _lines_html if html else _lines_text, reads_text=True)
    environment.add_filter("or_written", _or_written)
    environment.add_filter("value_of", _value_of)
    if velocity:
        # A Velocity name is the data's or nobody's, never Jinja's range, dict or lipsum.
        environment.globals.clear()
        # Velocity's #break is Jinja's {% break %}.
        environment.add_extension("jinja2.ext.loopcontrols")
        for filter_name, filter_function in VELOCITY_FILTERS.items():
            environment.add_filter(filter_name, filter_function)
    return environment


_ENVIRONMENTS = {
    (html, velocity): _environment(html=html, velocity=velocity) for html in (True, False) for velocity in (True, False)
}


class RenderError(Exception):
    """A template that failed to render for this particular context; `line` is where in it, when known."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _template_line(exc: BaseException) -> int | None:
    # Jinja rewrites a render's traceback so each template frame carries the template's own file and line.
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == "<template>"]
    return lines[-1] if lines else None


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str | None
    text: str | None


def to_jinja(source: str, syntax: str, *, name: str = "template") -> str:
    if syntax == "apicontent":
        return _APICONTENT.sub(r'{{ apicontent | value_of("\1") | lines }}', source)
    if syntax == "velocity":
        return translation.to_jinja(source, name=name)
    return source


@lru_cache(maxsize=1024)
def _compile(source: str, *, html: bool, syntax: str) -> JinjaTemplate:
    template = _ENVIRONMENTS[html, syntax == "velocity"].from_string(to_jinja(source, syntax))
    # Jinja copies a template's globals into every render's context, and copying its ChainMap is a large share of
    # rendering an email (bench/results.md, What the code's shape rests on); the environments' globals are fixed
    # once made.
    template.globals = dict(template.globals)
    return template


def check_template(source: str, *, name: str, syntax: str = "jinja") -> None:
    """Raise InvalidConfig naming the template part and line when the source does not compile."""
    try:
        _ENVIRONMENTS[False, syntax == "velocity"].parse(to_jinja(source, syntax, name=name))
    except TemplateSyntaxError as exc:
        raise InvalidConfig(f"{name}: line {exc.lineno}: {exc.message}") from exc


def template_context(
    contact: dict[str, Any],
    data: dict[str, Any],
    event: dict[str, Any],
    fields: dict[str, Any] | None = None,
    *,
    data_param: str | None = None,
) -> dict[str, Any]:
    """Bare data names (`{{ forgot_password_link }}`) work too; the named parts win over a data key.

    With `data_param`, `data` is that one param's value, as esputnik's templates see it.
    """
    shown = data.get(data_param) if data_param is not None else data
    named = {"contact": contact, "data": shown, "event": event, "fields": fields or {}, "apicontent": data}
    return {**data, **named}


def render_part(
    source: str, context: dict[str, Any], *, html: bool, syntax: str = "jinja", timeout_s: float | None = None
) -> str:
    """The part rendered for this context, within `timeout_s` (TRIPMAIL_RENDER_TIMEOUT_S unless given)."""
    try:
        template = _compile(source, html=html, syntax=syntax)
        return render_within(
            template, context, timeout_s=get_settings().render_timeout_s if timeout_s is None else timeout_s
        )
    except TemplateError as exc:
        raise RenderError(str(exc), line=_template_line(exc)) from exc
    except Exception as exc:
        # A template's own expressions can raise anything on the data they meet ("12" + 1 is a TypeError);
        # that is this template failing for this message, not the worker failing.
        raise RenderError(f"{type(exc).__name__}: {exc}", line=_template_line(exc)) from exc


def render_email(
    subject: str, html: str | None, text: str | None, context: dict[str, Any], *, syntax: str = "jinja"
) -> RenderedEmail:
    # A header cannot carry a line break; folding it to a space keeps a multi-line value readable.
    rendered_subject = " ".join(render_part(subject, context, html=False, syntax=syntax).split())
    return RenderedEmail(
        subject=rendered_subject,
        html=None if html is None else render_part(html, context, html=True, syntax=syntax),
        text=None if text is None else render_part(text, context, html=False, syntax=syntax),
    )

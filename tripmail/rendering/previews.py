"""A template rendered with sample data, as esputnik's editor shows it in "View message"."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tripmail.errors import InvalidRequest, NotFound
from tripmail.models import Template
from tripmail.rendering.templates import RenderedEmail, RenderError, render_part, template_context


def preview_template(
    session: Session,
    workspace_id: int,
    key: str,
    *,
    data: dict[str, Any],
    contact: dict[str, Any],
    event: dict[str, Any],
) -> RenderedEmail:
    """Render every part of the workspace's template `key`; InvalidRequest names the part and line that fails."""
    template = session.scalars(
        select(Template).where(Template.workspace_id == workspace_id, Template.key == key)
    ).one_or_none()
    if template is None:
        raise NotFound(f"no template {key!r} in this workspace", field="key")
    context = template_context(contact, data, event, data_param=template.data_param)
    parts: dict[str, str | None] = {}
    for part, html in (("subject", False), ("html", True), ("text", False)):
        source = getattr(template, part)
        try:
            parts[part] = None if source is None else render_part(source, context, html=html, syntax=template.syntax)
        except RenderError as exc:
            where = f"line {exc.line}: " if exc.line is not None else ""
            raise InvalidRequest(f"{part}: {where}{exc}", field=part) from exc
    subject = " ".join((parts["subject"] or "").split())
    return RenderedEmail(subject=subject, html=parts["html"], text=parts["text"])

"""Rendering: templates in a bounded Jinja sandbox, the Velocity subset, previews and attachments."""

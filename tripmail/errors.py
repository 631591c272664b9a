"""Domain errors: a stable code and a default HTTP status; the api decides the JSON."""

from typing import ClassVar

from typing_extensions import TypedDict


class FieldError(TypedDict):
    field: str
    message: str


class TripmailError(Exception):
    code: ClassVar[str] = "invalid-request"
    status: ClassVar[int] = 400

    def __init__(self, detail: str, *, field: str | None = None, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.errors: list[FieldError] = errors if errors is not None else []


class InvalidRequest(TripmailError):
    code, status = "invalid-request", 422

    @classmethod
    def listing(cls, errors: list[FieldError]) -> "InvalidRequest":
        """One error that names every field in `errors` (which must not be empty)."""
        detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
        return cls(detail, field=errors[0]["field"], errors=errors)


class Unauthenticated(TripmailError):
    code, status = "unauthenticated", 401


class Forbidden(TripmailError):
    code, status = "forbidden", 403


class NotFound(TripmailError):
    code, status = "not-found", 404


class MethodNotAllowed(TripmailError):
    code, status = "method-not-allowed", 405


class UnknownEventType(TripmailError):
    code, status = "unknown-event-type", 404


class Inactive(TripmailError):
    """The automation exists but is paused or a draft."""

    code, status = "inactive", 409


class InvalidConfig(TripmailError):
    """An apply file or template that cannot be loaded as written."""

    code, status = "invalid-config", 422


class PayloadTooLarge(TripmailError):
    code, status = "payload-too-large", 413


class Unavailable(TripmailError):
    code, status = "unavailable", 503


class RateLimited(TripmailError):
    """The token has used its budget for now; `retry_after_s` says when the request would fit."""

    code, status = "rate-limited", 429

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class KeyReused(TripmailError):
    """The event's key was first used, inside its dedupe window, by an event with different content."""

    code, status = "key-reused", 409

    def __init__(self, detail: str, *, first_event_id: str) -> None:
        super().__init__(detail, field="key")
        self.first_event_id = first_event_id

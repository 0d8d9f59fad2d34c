"""Domain errors raised by the core.

Each error carries the HTTP status and the machine-readable code of the
spec's error body, so the API layer renders them without a lookup table::

    DomainError
     ├── InvalidInput        400  the request is well-formed JSON but not acceptable
     ├── NotFound            404  no such context
     └── Conflict            409  version mismatch, tombstoned context, reused key
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class: a request the core refuses; state is left unchanged."""

    status = 400
    code = "invalid_request"
    retry_after: int | None = None
    """Seconds a ``Retry-After`` header asks the client to wait (none by default)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DomainError)
            and type(other) is type(self)
            and (other.code, other.message) == (self.code, self.message)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.code, self.message))

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.code))


class InvalidInput(DomainError):
    status = 400
    code = "invalid_request"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"

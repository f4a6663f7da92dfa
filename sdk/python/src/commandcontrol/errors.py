"""Errors the SDK raises. A function's or the control service's error is a
CCError with the HTTP-like code of fleet/errors.go."""

from __future__ import annotations

from typing import Any, Optional


class CCError(Exception):
    """An error with a code, as the fleet sends it (Nats-Service-Error-Code
    and Nats-Service-Error headers)."""

    code: int
    description: str
    #: on a 429 from the control service: milliseconds until a retry is let through
    retry_after_ms: Optional[int]

    def __init__(self, code: int, description: str, retry_after_ms: Optional[int] = None) -> None:
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description
        self.retry_after_ms = retry_after_ms

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CCError) and (self.code, self.description) == (other.code, other.description)

    def __hash__(self) -> int:
        return hash((self.code, self.description))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.description!r})"

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "description": self.description}


class BadRequest(CCError):
    """400: malformed request, unknown or mistyped argument."""


class Forbidden(CCError):
    """403: the caller's role does not allow this."""


class NotFound(CCError):
    """404: unknown function, machine or operator."""


class Conflict(CCError):
    """409: already exists."""


class TooManyRequests(CCError):
    """429: over the operator's rate limit; retry after retry_after_ms."""


_BY_CODE: dict[int, type[CCError]] = {400: BadRequest, 403: Forbidden, 404: NotFound, 409: Conflict, 429: TooManyRequests}


def cc_error(code: int, description: str, retry_after_ms: Optional[int] = None) -> CCError:
    """Build the CCError subclass for code."""
    return _BY_CODE.get(code, CCError)(code, description, retry_after_ms)


class NoService(Exception):
    """Nobody answers a presence or control request: is cc-control running?"""


class NoMatch(Exception):
    """A call's selection chose nobody: no ONLINE machine matches its
    selector (or none is ONLINE), or no ONLINE session its query. Nothing
    was called; .result is the empty CallResult. Go's bench.ErrNoMatch."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class ConnectError(Exception):
    """Connecting failed: the broker is unreachable, refused the key, the seed
    is bad or unsafe, or plain text to a remote broker was refused. The message
    says which and what to do."""


class NoKey(Exception):
    """The operation needs the operator's key; connect with key_file or seed."""

"""One exception hierarchy for the gateway, each error knowing its HTTP status and OpenAI type.

Everything a client can see goes through :func:`error_body` (a JSON answer) or
:func:`stream_error_events` (the end of a stream), which produce the OpenAI error shape
``{"error": {"message", "type", "param", "code"}}``. Foreign exceptions (httpx, sqlite,
litestar) are translated at the edge into one of these; a stack trace never reaches a client.
An error may carry response headers (``retry-after``, or what the pipeline had already said
about the request); the one place that turns errors into responses sends them.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from understudy.config_reader import ConfigError as ConfigError  # settings' errors, re-exported

DONE_EVENT = b"data: [DONE]\n\n"


class UnderstudyError(Exception):
    """Base class: ``status_code`` and ``type`` are what the client receives."""

    status_code: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def with_headers(self, headers: Mapping[str, str]) -> UnderstudyError:
        """This error, to be answered with ``headers`` too (its own win)."""
        self.headers = {**headers, **self.headers}
        return self


class InvalidRequestError(UnderstudyError):
    status_code = 400
    type = "invalid_request_error"


class AuthenticationError(UnderstudyError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(UnderstudyError):
    status_code = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFoundError(UnderstudyError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowedError(UnderstudyError):
    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLargeError(UnderstudyError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(UnderstudyError):
    status_code = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class BudgetExceededError(RateLimitError):
    """A gateway key has spent its monthly budget (OpenAI's ``insufficient_quota``)."""

    type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamError(UnderstudyError):
    """The teacher failed (5xx or connection error) and the retry budget is spent."""

    status_code = 502
    type = "upstream_error"
    code = "teacher_unavailable"
    attempts: int = 1
    """Calls made to the teacher before giving up (for the gateway's log line)."""


class TeacherCredentialsError(UpstreamError):
    """The teacher refused the gateway's own teacher key (or the lack of one): the client's
    key is not in question, so this is a 502, not the teacher's 401."""

    code = "teacher_auth_failed"


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    code = "teacher_timeout"


class ClientLeftError(UnderstudyError):
    """The client closed its connection before the answer was ready (nobody reads this one)."""

    status_code = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class ServiceUnavailableError(UnderstudyError):
    status_code = 503
    type = "server_error"
    code = "unavailable"


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


def error_body(exc: UnderstudyError) -> bytes:
    """The OpenAI error object for ``exc``, encoded (a lone surrogate in a message, as a
    teacher's error text may hold, becomes U+FFFD)."""
    detail = ErrorDetail(_text(exc.message), exc.type, _text(exc.param), exc.code)
    return msgspec.json.encode(ErrorBody(detail))


def _text(value: str | None) -> str | None:
    """``value`` as valid Unicode: lone surrogates replaced."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def stream_error_events(exc: UnderstudyError) -> tuple[bytes, bytes]:
    """How a stream ends on an error, as OpenAI-compatible servers send it: a last ``data:``
    event carrying the error object, then ``[DONE]``."""
    return b"data: " + error_body(exc) + b"\n\n", DONE_EVENT


class ResponsesErrorEvent(msgspec.Struct, tag="error", tag_field="type"):
    code: str | None
    message: str
    param: str | None
    sequence_number: int


def responses_error_event(exc: UnderstudyError, sequence_number: int) -> bytes:
    """How a Responses API stream ends on an error: a typed ``error`` event (no ``[DONE]``)."""
    event = ResponsesErrorEvent(
        exc.code, _text(exc.message) or "", _text(exc.param), sequence_number
    )
    return b"event: error\ndata: " + msgspec.json.encode(event) + b"\n\n"

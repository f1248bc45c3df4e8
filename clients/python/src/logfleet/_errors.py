"""Exceptions raised by the LogFleet client.

Every failure is a :class:`LogFleetError`. Errors the host reports carry its machine-readable
``code`` (``agent_not_found``, ``invalid_filter``, …) and the HTTP ``status``; the subclasses
let callers catch the cases they handle differently.
"""

from __future__ import annotations

from typing import Any, Optional


class LogFleetError(Exception):
    """A LogFleet call failed.

    Attributes:
        code: The host's error code (e.g. ``"agent_offline"``), or a client-side code such as
            ``"network"`` or ``"stream_closed"``.
        message: Human-readable explanation.
        status: HTTP status of the host's answer, or ``None`` when there was no answer.
    """

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(f"{message} ({status} {code})" if status else f"{message} ({code})")
        self.code = code
        self.message = message
        self.status = status


class AuthError(LogFleetError):
    """The token is missing, invalid, expired (401) or not allowed to do this (403)."""


class NotFoundError(LogFleetError):
    """The agent, session or plugin does not exist (404)."""


class AgentOfflineError(LogFleetError):
    """The agent is known but not connected, so it cannot stream (409)."""


class InvalidRequestError(LogFleetError):
    """The host refused the request as invalid: bad timeout, filter or limits (400)."""


class LogFleetConnectionError(LogFleetError):
    """The host could not be reached."""

    def __init__(self, message: str) -> None:
        super().__init__("network", message)


class StreamClosedError(LogFleetError):
    """A session stream closed without the session ending (connection lost, or code 4008:
    this client read too slowly)."""

    def __init__(self, message: str, close_code: Optional[int] = None) -> None:
        super().__init__("stream_closed", message)
        self.close_code = close_code


def error_from_response(status: int, body: Any) -> LogFleetError:
    """Builds the right exception from a non-2xx status and its (decoded JSON) body."""
    code = f"http_{status}"
    message = "the host gave no details"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:200]
    cls: type[LogFleetError]
    if status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = AgentOfflineError
    elif status == 400:
        cls = InvalidRequestError
    else:
        cls = LogFleetError
    return cls(code, message, status)

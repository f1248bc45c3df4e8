"""Pieces shared by the sync and async clients: configuration, request bodies, and decoding
of WebSocket messages."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from ._errors import AuthError, LogFleetError, StreamClosedError, error_from_response
from ._models import ControlEvent, LogEntry

DEFAULT_URL = "http://127.0.0.1:8080"
"""Host URL used when neither ``base_url`` nor ``LOGFLEET_URL`` is given."""

DEFAULT_TIMEOUT = 300
"""Session length in seconds when none is given (the host's default too)."""

HTTP_TIMEOUT = 30.0
"""Seconds one REST call may take."""

CLOSE_TIMEOUT = 1.0
"""Seconds closing a stream's WebSocket waits for the host's closing handshake. The session is
stopped (or over) by then, so waiting longer gains nothing, and a connection that broke may
never answer."""

CLOSE_CLIENT_TOO_SLOW = 4008
"""WebSocket close code the host uses for a client that stayed too far behind."""

OnEnding = Callable[[int], Any]
"""Called with ``seconds_remaining`` when the session warns it is about to end."""

OnControl = Callable[[ControlEvent], Any]
"""Called with every control event (ending, ended, dropped lines, agent status, …)."""

Message = Union[LogEntry, ControlEvent]


def resolve_config(token: Optional[str], base_url: Optional[str]) -> "tuple[str, str]":
    """Fills ``token`` and ``base_url`` from ``LOGFLEET_TOKEN`` / ``LOGFLEET_URL``."""
    token = token or os.environ.get("LOGFLEET_TOKEN")
    if not token:
        raise AuthError("missing_token", "no token: pass token=... or set LOGFLEET_TOKEN")
    url = (base_url or os.environ.get("LOGFLEET_URL") or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise LogFleetError("invalid_url", f"base_url must be http:// or https://, got {url!r}")
    return token, url


def start_body(
    agent_id: Optional[str],
    timeout: Optional[int],
    filters: Optional[Mapping[str, Any]],
    limits: Optional[Mapping[str, Any]],
    backfill: Optional[int] = None,
    agent_ids: Optional[Sequence[str]] = None,
    selector: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The JSON body of ``POST /api/v1/stream/start``: one agent (``agent_id``), or a fleet
    session on ``agent_ids`` or on every agent a ``selector`` (``{"labels": {...}, "name":
    "GLOB"}``) matches. The host wants exactly one of the three."""
    body: Dict[str, Any] = {}
    if agent_id is not None:
        body["agent_id"] = str(agent_id)
    if agent_ids is not None:
        body["agent_ids"] = [str(a) for a in agent_ids]
    if selector is not None:
        body["selector"] = dict(selector)
    body["timeout_seconds"] = DEFAULT_TIMEOUT if timeout is None else int(timeout)
    if filters:
        body["filters"] = dict(filters)
    if limits:
        body["limits"] = dict(limits)
    if backfill is not None:
        body["backfill"] = {"lines": int(backfill)}
    return body


def ws_url(websocket_url: str, since_seq: Optional[int] = None) -> str:
    """The session's WebSocket URL, with ``since_seq`` when resuming."""
    if since_seq is None:
        return websocket_url
    parts = urlsplit(websocket_url)
    query = "&".join(q for q in (parts.query, urlencode({"since_seq": since_seq})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def decode(text: Union[str, bytes]) -> Optional[Message]:
    """Decodes one WebSocket text frame; ``None`` for anything this version does not know."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    if kind == "log":
        return LogEntry.from_json(data)
    if kind == "control":
        return ControlEvent.from_json(data)
    return None


def closed_error(session_id: str, code: Optional[int], reason: str) -> StreamClosedError:
    """The error for a stream that closed without ``session_ended``."""
    if code == CLOSE_CLIENT_TOO_SLOW:
        detail = "this client read too slowly and the host closed the stream (4008)"
    else:
        detail = f"close code {code}: {reason}" if code else "connection lost"
    return StreamClosedError(f"stream of session {session_id} closed: {detail}", code)


def response_body(response: httpx.Response) -> Any:
    """The body of a REST answer (JSON when it parses, else text); raises the matching
    :class:`LogFleetError` for an error status."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if response.is_error:
        raise error_from_response(response.status_code, body)
    return body


def handshake_error(status: int, raw_body: Union[bytes, bytearray, None]) -> LogFleetError:
    """The :class:`LogFleetError` for a refused WebSocket upgrade, from its (JSON) body."""
    raw = raw_body.decode(errors="replace") if raw_body else ""
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw
    return error_from_response(status, body)

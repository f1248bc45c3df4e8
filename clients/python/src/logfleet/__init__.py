"""Python client for LogFleet on-demand log streaming.

Quick start (the reference snippet)::

    from logfleet import Client

    client = Client(token="your-jwt-token")  # base_url defaults to $LOGFLEET_URL

    with client.stream(
        agent_id="agent-uuid",
        timeout=300,
        filters={"level": ["ERROR"]}
    ) as stream:
        for log in stream:
            print(f"[{log.level}] {log.message}")

:class:`Client` is synchronous; :class:`AsyncClient` is the asyncio variant with the same
methods as coroutines.
"""

from ._async import AsyncClient, AsyncStream
from ._client import Client, Stream
from ._errors import (
    AgentOfflineError,
    AuthError,
    InvalidRequestError,
    LogFleetConnectionError,
    LogFleetError,
    NotFoundError,
    StreamClosedError,
)
from ._models import (
    Agent,
    ControlEvent,
    EndReason,
    Level,
    LogEntry,
    Metadata,
    Session,
    SessionSummary,
    Source,
)

__all__ = [
    "Agent",
    "AgentOfflineError",
    "AsyncClient",
    "AsyncStream",
    "AuthError",
    "Client",
    "ControlEvent",
    "EndReason",
    "Level",
    "InvalidRequestError",
    "LogEntry",
    "LogFleetConnectionError",
    "LogFleetError",
    "Metadata",
    "NotFoundError",
    "Session",
    "SessionSummary",
    "Source",
    "Stream",
    "StreamClosedError",
]

__version__ = "0.1.0"

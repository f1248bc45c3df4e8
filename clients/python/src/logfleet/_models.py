"""Typed views of the host's JSON: log lines, control events, sessions and agents.

Field names follow the public API reference exactly, so ``log.level`` here is ``"level"`` there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Literal, Mapping, Optional, cast

Level = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
"""The six log levels, as the host sends them."""

EndReason = Literal["timeout", "stopped", "shutdown", "filter_failed"]
"""Why a session ended."""


def parse_time(text: str) -> datetime:
    """An RFC 3339 UTC timestamp as the host writes it (``2024-01-15T10:00:00.123Z``), as an
    aware :class:`~datetime.datetime` (Python before 3.11 does not read the ``Z`` itself)."""
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _optional_time(value: Any) -> Optional[datetime]:
    return parse_time(value) if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Metadata:
    """Where a log line came from."""

    host: str
    """Host name of the agent's machine."""
    file: str
    """Path of the file the line was read from."""
    line: int
    """1-based line number in that file."""
    read_at: Optional[datetime] = None
    """When the agent read the line (UTC), when the host says."""
    fields: Dict[str, Any] = field(default_factory=dict)
    """Fields of a JSON or logfmt line other than its message, level and time."""


@dataclass(frozen=True)
class LogEntry:
    """One streamed log line (the reference's "Log Message Format")."""

    seq: int
    """Per-agent line counter: +1 per line the agent reads. Use it to detect gaps and
    de-duplicate overlapping sessions."""
    timestamp: datetime
    """The event time (UTC, millisecond precision): from the line when the agent recognised
    one, else when it read the line."""
    level: Level
    """``TRACE``, ``DEBUG``, ``INFO``, ``WARN``, ``ERROR`` or ``FATAL``."""
    source: str
    """The agent's name for the file's source, e.g. ``nginx``."""
    message: str
    metadata: Metadata
    backfill: bool = False
    """Sent before the live lines because the stream asked for a backfill."""
    agent_id: str = ""
    """The agent that read the line."""
    agent_seq: Optional[int] = None
    """In a fleet session (``agent_ids`` or ``selector``), ``seq`` is the session's counter
    (+1 per record, across agents) and this is the agent's own."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LogEntry":
        meta = data.get("metadata") or {}
        return cls(
            seq=int(data.get("seq", 0)),
            timestamp=parse_time(str(data.get("timestamp", ""))),
            level=cast(Level, str(data.get("level", ""))),
            source=str(data.get("source", "")),
            message=str(data.get("message", "")),
            metadata=Metadata(
                host=str(meta.get("host", "")),
                file=str(meta.get("file", "")),
                line=int(meta.get("line", 0)),
                read_at=_optional_time(meta.get("read_at")),
                fields=dict(meta.get("fields") or {}),
            ),
            backfill=bool(data.get("backfill", False)),
            agent_id=str(data.get("agent_id", "")),
            agent_seq=data.get("agent_seq"),
        )


@dataclass(frozen=True)
class ControlEvent:
    """A ``{"type": "control"}`` message: ``session_ending``, ``session_ended``,
    ``agent_disconnected``, ``agent_reconnected``, ``agent_joined``, ``logs_dropped``,
    ``filter_error``, ``backfill_done`` (``count`` lines were backfilled; ``truncated`` when
    the agent's scan bound stopped it short) and others; ``raw`` has every field.
    ``agent_id`` names the agent a per-agent event is about."""

    event: str
    reason: Optional[str] = None
    seconds_remaining: Optional[int] = None
    count: Optional[int] = None
    plugin: Optional[str] = None
    message: Optional[str] = None
    truncated: bool = False
    agent_id: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ControlEvent":
        return cls(
            event=str(data.get("event", "")),
            reason=data.get("reason"),
            seconds_remaining=data.get("seconds_remaining"),
            count=data.get("count"),
            plugin=data.get("plugin"),
            message=data.get("message"),
            truncated=bool(data.get("truncated", False)),
            agent_id=data.get("agent_id"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Session:
    """A streaming session, as ``start`` and ``stop`` return it."""

    id: str
    agent_id: str
    status: str
    started_at: str
    expires_at: str
    websocket_url: str
    agent_ids: Optional[List[str]] = None
    """A fleet session's current members (``None`` for a single-agent session)."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Session":
        return cls(
            id=data["id"],
            agent_id=data["agent_id"],
            status=data["status"],
            started_at=data["started_at"],
            expires_at=data["expires_at"],
            websocket_url=data["websocket_url"],
            agent_ids=data.get("agent_ids"),
        )


@dataclass(frozen=True)
class SessionSummary:
    """An entry of the active sessions list."""

    id: str
    agent_id: str
    agent_name: str
    status: str
    started_at: str
    expires_at: str
    created_by: Optional[str] = None
    clients: Optional[int] = None
    agent_ids: Optional[List[str]] = None
    """A fleet session's current members (``None`` for a single-agent session)."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SessionSummary":
        return cls(
            id=data["id"],
            agent_id=data["agent_id"],
            agent_name=data.get("agent_name", ""),
            status=data["status"],
            started_at=data["started_at"],
            expires_at=data["expires_at"],
            created_by=data.get("created_by"),
            clients=data.get("clients"),
            agent_ids=data.get("agent_ids"),
        )


@dataclass(frozen=True)
class Source:
    """A log source configured on an agent."""

    name: str
    path: str


@dataclass(frozen=True)
class Agent:
    """What the host knows of one agent."""

    id: str
    name: str
    hostname: str
    version: str
    status: str
    """``online`` or ``offline``."""
    sources: List[Source]
    connected_at: Optional[str]
    last_seen: str
    active_sessions: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Agent":
        return cls(
            id=data["id"],
            name=data["name"],
            hostname=data.get("hostname", ""),
            version=data.get("version", ""),
            status=data["status"],
            sources=[Source(s["name"], s["path"]) for s in data.get("sources", [])],
            connected_at=data.get("connected_at"),
            last_seen=data.get("last_seen", ""),
            active_sessions=int(data.get("active_sessions", 0)),
        )

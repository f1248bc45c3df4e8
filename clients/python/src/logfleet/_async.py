"""The asyncio client: :class:`AsyncClient` and its :class:`AsyncStream`.

Same methods as the synchronous :class:`~logfleet.Client`, as coroutines::

    async with AsyncClient(token=...) as client:
        async with client.stream(agent_id="edge-1", filters={"level": ["ERROR"]}) as stream:
            async for log in stream:
                print(f"[{log.level}] {log.message}")
"""

from __future__ import annotations

import inspect
from types import TracebackType
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Type
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ._common import (
    HTTP_TIMEOUT,
    OnControl,
    OnEnding,
    closed_error,
    decode,
    handshake_error,
    resolve_config,
    response_body,
    start_body,
    ws_url,
)
from ._errors import LogFleetConnectionError, LogFleetError
from ._models import Agent, ControlEvent, LogEntry, Session, SessionSummary

__all__ = ["AsyncClient", "AsyncStream"]


class AsyncClient:
    """An asyncio client of one LogFleet host. Arguments as for :class:`~logfleet.Client`."""

    def __init__(
        self,
        token: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        http_timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.token, self.base_url = resolve_config(token, base_url)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=http_timeout,
        )

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise LogFleetConnectionError(f"cannot reach the host at {self.base_url}: {e}") from e
        return response_body(response)

    async def agents(self) -> List[Agent]:
        """Every agent of the token's organisation."""
        body = await self._request("GET", "/api/v1/agents")
        return [Agent.from_json(a) for a in body["agents"]]

    async def agent(self, agent_id: str) -> Agent:
        """One agent, by UUID or name."""
        body = await self._request("GET", f"/api/v1/agents/{quote(agent_id, safe='')}")
        return Agent.from_json(body["agent"])

    async def sessions(self) -> List[SessionSummary]:
        """The organisation's active streaming sessions."""
        body = await self._request("GET", "/api/v1/stream/sessions")
        return [SessionSummary.from_json(s) for s in body["sessions"]]

    async def start(
        self,
        agent_id: str,
        timeout: Optional[int] = None,
        filters: Optional[Mapping[str, Any]] = None,
        limits: Optional[Mapping[str, Any]] = None,
    ) -> Session:
        """Starts a session without connecting to it."""
        body = await self._request(
            "POST", "/api/v1/stream/start", json=start_body(agent_id, timeout, filters, limits)
        )
        return Session.from_json(body["session"])

    async def stop(self, session_id: str) -> Session:
        """Stops a session."""
        body = await self._request("POST", "/api/v1/stream/stop", json={"session_id": session_id})
        return Session.from_json(body["session"])

    def stream(
        self,
        agent_id: str,
        timeout: Optional[int] = None,
        filters: Optional[Mapping[str, Any]] = None,
        *,
        limits: Optional[Mapping[str, Any]] = None,
        on_ending: Optional[OnEnding] = None,
        on_control: Optional[OnControl] = None,
    ) -> "AsyncStream":
        """A stream to use with ``async with``: the session starts on entry and is stopped on
        exit. ``on_ending`` / ``on_control`` may be plain functions or coroutine functions."""
        return AsyncStream(
            self, start_body(agent_id, timeout, filters, limits), on_ending, on_control
        )

    async def start_stream(
        self,
        agent_id: str,
        timeout: Optional[int] = None,
        filters: Optional[Mapping[str, Any]] = None,
        *,
        limits: Optional[Mapping[str, Any]] = None,
        on_ending: Optional[OnEnding] = None,
        on_control: Optional[OnControl] = None,
    ) -> "AsyncStream":
        """Starts a session and connects to it now. Await :meth:`AsyncStream.stop` when done."""
        stream = self.stream(
            agent_id, timeout, filters, limits=limits, on_ending=on_ending, on_control=on_control
        )
        await stream.start()
        return stream

    async def close(self) -> None:
        """Releases the HTTP connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncStream:
    """One session's log stream; ``async for`` it for :class:`~logfleet.LogEntry` objects.
    Attributes as for :class:`~logfleet.Stream`."""

    def __init__(
        self,
        client: AsyncClient,
        request: Dict[str, Any],
        on_ending: Optional[OnEnding],
        on_control: Optional[OnControl],
    ) -> None:
        self._client = client
        self._request = request
        self._on_ending = on_ending
        self._on_control = on_control
        self._ws: Optional[ClientConnection] = None
        self.session: Optional[Session] = None
        self.ended_reason: Optional[str] = None
        self.seconds_remaining: Optional[int] = None

    @property
    def session_id(self) -> Optional[str]:
        """The session's id, once started."""
        return self.session.id if self.session else None

    async def start(self) -> "AsyncStream":
        """Starts the session and connects. Does nothing if already started."""
        if self.session is not None:
            return self
        self.session = await self._client.start(
            self._request["agent_id"],
            self._request["timeout_seconds"],
            self._request.get("filters"),
            self._request.get("limits"),
        )
        try:
            self._ws = await self._connect(self.session)
        except BaseException:
            await self._stop_session()
            raise
        return self

    async def _connect(self, session: Session) -> ClientConnection:
        try:
            return await connect(
                ws_url(session.websocket_url),
                additional_headers={"Authorization": f"Bearer {self._client.token}"},
                open_timeout=HTTP_TIMEOUT,
            )
        except InvalidStatus as e:
            raise handshake_error(e.response.status_code, e.response.body) from e
        except (OSError, WebSocketException, TimeoutError) as e:
            raise LogFleetConnectionError(
                f"cannot connect to {session.websocket_url}: {e}"
            ) from e

    async def messages(self) -> AsyncIterator[Any]:
        """Every message, logs and control events, until the session ends."""
        await self.start()
        ws = self._ws
        assert ws is not None and self.session is not None
        while True:
            try:
                text = await ws.recv()
            except ConnectionClosed as e:
                if self.ended_reason is not None:
                    return
                code = e.rcvd.code if e.rcvd else None
                if code == 1000:
                    return
                raise closed_error(self.session.id, code, e.rcvd.reason if e.rcvd else "") from e
            msg = decode(text)
            if msg is None:
                continue
            if isinstance(msg, ControlEvent):
                await self._on_control_event(msg)
            yield msg
            if isinstance(msg, ControlEvent) and msg.event == "session_ended":
                return

    async def _on_control_event(self, event: ControlEvent) -> None:
        if event.event == "session_ending":
            self.seconds_remaining = event.seconds_remaining
            if self._on_ending is not None:
                await _maybe_await(self._on_ending(int(event.seconds_remaining or 0)))
        elif event.event == "session_ended":
            self.ended_reason = event.reason or "unknown"
        if self._on_control is not None:
            await _maybe_await(self._on_control(event))

    async def __aiter__(self) -> AsyncIterator[LogEntry]:
        async for msg in self.messages():
            if isinstance(msg, LogEntry):
                yield msg

    async def stop(self) -> None:
        """Stops the session on the host (if still running) and closes the stream."""
        await self._stop_session()
        if self._ws is not None:
            await self._ws.close()

    async def _stop_session(self) -> None:
        if self.session is None or self.ended_reason is not None:
            return
        try:
            await self._client.stop(self.session.id)
        except LogFleetError as e:
            if e.code != "session_not_found":
                raise

    async def __aenter__(self) -> "AsyncStream":
        return await self.start()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.stop()


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value

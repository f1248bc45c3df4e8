"""The asyncio client: :class:`AsyncClient` and its :class:`AsyncStream`.

Same methods as the synchronous :class:`~logfleet.Client`, as coroutines::

    async with AsyncClient(token=...) as client:
        async with client.stream(agent_id="edge-1", filters={"level": ["ERROR"]}) as stream:
            async for log in stream:
                print(f"[{log.level}] {log.message}")
"""

from __future__ import annotations

import asyncio
import inspect
import time
import warnings
from types import TracebackType
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Tuple, Type, Union
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ._common import (
    CLOSE_TIMEOUT,
    HTTP_TIMEOUT,
    Message,
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
from ._errors import LogFleetConnectionError, LogFleetError, StreamClosedError
from ._models import Agent, ControlEvent, LogEntry, Session, SessionSummary
from ._resume import (
    EXPIRY_GRACE,
    STOP_TIMEOUT,
    Backoff,
    ended_while_away,
    follows,
    is_gone,
    is_transient,
    log,
    not_stopped_message,
    renewal_due,
    since,
    stop_blocking,
    track,
    untrack,
)

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
        agent_id: Optional[str] = None,
        timeout: Optional[int] = None,
        filters: Optional[Mapping[str, Any]] = None,
        limits: Optional[Mapping[str, Any]] = None,
        backfill: Optional[int] = None,
        *,
        agent_ids: Optional[List[str]] = None,
        selector: Optional[Mapping[str, Any]] = None,
    ) -> Session:
        """Starts a session without connecting to it."""
        body = await self._request(
            "POST",
            "/api/v1/stream/start",
            json=start_body(
                agent_id, timeout, filters, limits, backfill, agent_ids, selector
            ),
        )
        return Session.from_json(body["session"])

    async def stop(self, session_id: str) -> Session:
        """Stops a session."""
        body = await self._request("POST", "/api/v1/stream/stop", json={"session_id": session_id})
        return Session.from_json(body["session"])

    def stream(
        self,
        agent_id: Optional[str] = None,
        timeout: Optional[int] = None,
        filters: Optional[Mapping[str, Any]] = None,
        *,
        limits: Optional[Mapping[str, Any]] = None,
        backfill: Optional[int] = None,
        agent_ids: Optional[List[str]] = None,
        selector: Optional[Mapping[str, Any]] = None,
        on_ending: Optional[OnEnding] = None,
        on_control: Optional[OnControl] = None,
        follow: bool = False,
    ) -> "AsyncStream":
        """A stream to use with ``async with``: the session starts on entry and is stopped on
        exit. ``on_ending`` / ``on_control`` may be plain functions or coroutine functions;
        ``follow`` as for :meth:`logfleet.Client.stream`."""
        return AsyncStream(
            self,
            start_body(agent_id, timeout, filters, limits, backfill, agent_ids, selector),
            on_ending,
            on_control,
            follow,
        )

    async def start_stream(
        self,
        agent_id: Optional[str] = None,
        timeout: Optional[int] = None,
        filters: Optional[Mapping[str, Any]] = None,
        *,
        limits: Optional[Mapping[str, Any]] = None,
        backfill: Optional[int] = None,
        agent_ids: Optional[List[str]] = None,
        selector: Optional[Mapping[str, Any]] = None,
        on_ending: Optional[OnEnding] = None,
        on_control: Optional[OnControl] = None,
        follow: bool = False,
    ) -> "AsyncStream":
        """Starts a session and connects to it now. Await :meth:`AsyncStream.stop` when done."""
        stream = self.stream(
            agent_id,
            timeout,
            filters,
            limits=limits,
            backfill=backfill,
            agent_ids=agent_ids,
            selector=selector,
            on_ending=on_ending,
            on_control=on_control,
            follow=follow,
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
    Attributes, resuming and stopping as for :class:`~logfleet.Stream`. A stream that is
    garbage-collected or still running at interpreter exit is stopped with a blocking call
    (no event loop is available there)."""

    def __init__(
        self,
        client: AsyncClient,
        request: Dict[str, Any],
        on_ending: Optional[OnEnding],
        on_control: Optional[OnControl],
        follow: bool = False,
    ) -> None:
        self._client = client
        if follow and ("agent_ids" in request or "selector" in request):
            # Following hands over between sessions by the agent's seq; a fleet numbers its
            # records per session, so there is nothing to hand over by.
            raise ValueError("follow=True is for one agent (agent_id) only")
        self._follow = follow
        self._next: Optional[Tuple[Session, float]] = None
        self._renew_retry: Optional[float] = None
        self._renew_backoff = Backoff()
        self._request = request
        self._on_ending = on_ending
        self._on_control = on_control
        self._ws: Optional[ClientConnection] = None
        self._entered = False
        self._stopped = False
        self._last_seq: Optional[int] = None
        self._expires = 0.0
        self.session: Optional[Session] = None
        self.ended_reason: Optional[str] = None
        self.seconds_remaining: Optional[int] = None
        self.reconnects = 0
        self.logs_dropped = 0
        self.sessions_followed = 0

    @property
    def session_id(self) -> Optional[str]:
        """The session's id, once started."""
        return self.session.id if self.session else None

    async def start(self) -> "AsyncStream":
        """Starts the session and connects. Does nothing if already started."""
        if self.session is not None:
            return self
        self.session, self._expires = await self._start_session()
        track(self)
        try:
            self._ws = await self._connect(self.session, None)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start_session(self) -> Tuple[Session, float]:
        expires = time.monotonic() + self._request["timeout_seconds"]
        session = await self._client.start(
            self._request.get("agent_id"),
            self._request["timeout_seconds"],
            self._request.get("filters"),
            self._request.get("limits"),
            self._request.get("backfill", {}).get("lines"),
            agent_ids=self._request.get("agent_ids"),
            selector=self._request.get("selector"),
        )
        # Sessions that continue this one (follow) start live: the lines before them were
        # streamed already.
        self._request.pop("backfill", None)
        return session, expires

    def _until_renewal(self) -> Optional[float]:
        """As :meth:`logfleet.Stream._until_renewal`."""
        if not self._follow or self._next is not None:
            return None
        due = renewal_due(self._expires, self._request["timeout_seconds"])
        if self._renew_retry is not None:
            due = max(due, self._renew_retry)
        return max(due - time.monotonic(), 0.0)

    async def _renew(self) -> None:
        """As :meth:`logfleet.Stream._renew`."""
        try:
            self._next = await self._start_session()
        except LogFleetError as e:
            if not is_transient(e):
                raise
            if self._renew_backoff.failures == 0:
                log.warning("cannot start the next session yet: %s; retrying", e)
            self._renew_retry = time.monotonic() + self._renew_backoff.delay()
            return
        if self._renew_backoff.failures:
            log.warning("started the next session %s", self._next[0].id)
        self._renew_retry = None
        self._renew_backoff = Backoff()

    async def _switch(self) -> None:
        """As :meth:`logfleet.Stream._switch`."""
        assert self.session is not None
        ended = self.session.id
        if self._ws is not None:
            await self._ws.close()
        while True:
            if self._next is None:
                log.warning(
                    "session %s ended before the next one started; lines read meanwhile are "
                    "not streamed",
                    ended,
                )
                self._next = await self._start_retrying()
            self.session, self._expires = self._next
            self._next = None
            self._renew_retry = None
            self._renew_backoff = Backoff()
            if await self._reconnect(None):
                self.sessions_followed += 1
                return

    async def _start_retrying(self) -> Tuple[Session, float]:
        """As :meth:`logfleet.Stream._start_retrying`."""
        backoff = Backoff()
        while True:
            try:
                started = await self._start_session()
            except LogFleetError as e:
                if not is_transient(e):
                    raise
                if backoff.failures == 0:
                    log.warning("cannot start a session: %s; retrying until it can", e)
                await asyncio.sleep(backoff.delay())
                continue
            if backoff.failures:
                log.warning("started session %s", started[0].id)
            return started

    async def _connect(self, session: Session, since_seq: Optional[int]) -> ClientConnection:
        try:
            return await connect(
                ws_url(session.websocket_url, since_seq),
                additional_headers={"Authorization": f"Bearer {self._client.token}"},
                open_timeout=HTTP_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
            )
        except InvalidStatus as e:
            raise handshake_error(e.response.status_code, e.response.body) from e
        except (OSError, EOFError, WebSocketException, TimeoutError) as e:
            # EOFError: websockets 14 raises it bare for a connection cut mid-handshake.
            raise LogFleetConnectionError(
                f"cannot connect to {session.websocket_url}: {e}"
            ) from e

    async def _recv(self) -> Optional[Union[str, bytes]]:
        """The next frame; ``None`` when the stream is over. Reconnects a broken stream."""
        while True:
            assert self._ws is not None and self.session is not None
            try:
                wait = self._until_renewal()
                if wait is None:
                    return await self._ws.recv()
                # Cancelling websockets' recv() loses no message.
                return await asyncio.wait_for(self._ws.recv(), wait)
            except asyncio.TimeoutError:
                await self._renew()
                continue
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                if self.ended_reason is not None or code == 1000:
                    return None
                cause = closed_error(self.session.id, code, e.rcvd.reason if e.rcvd else "")
                if await self._reconnect(cause):
                    continue
                if self._follow:
                    await self._switch()
                    continue
                self.ended_reason = ended_while_away(self._expires)
                untrack(self)
                return None

    async def _reconnect(self, cause: Optional[StreamClosedError]) -> bool:
        """As :meth:`logfleet.Stream._reconnect`."""
        assert self.session is not None
        if self._ws is not None and cause is not None:
            await self._ws.close()
        backoff = Backoff()
        while True:
            try:
                self._ws = await self._connect(self.session, since(self._last_seq))
                if cause is not None:
                    self.reconnects += 1
                return True
            except LogFleetError as e:
                if is_gone(e):
                    return False
                if not is_transient(e) or time.monotonic() > self._expires + EXPIRY_GRACE:
                    if cause is None:
                        raise
                    raise cause from e
            await asyncio.sleep(backoff.delay())

    async def messages(self) -> AsyncIterator[Message]:
        """Every message, logs and control events, until the session ends."""
        # A stream whose iteration started it (`for log in client.stream(...)`) is stopped when
        # that iteration ends early: nothing else would stop it. Streams started by `with` or
        # `start_stream()` stay running until those stop them.
        owned = self.session is None and not self._entered
        await self.start()
        early = True
        try:
            while True:
                text = await self._recv()
                if text is None:
                    early = False
                    return
                msg = decode(text)
                if msg is None:
                    continue
                if isinstance(msg, LogEntry):
                    if self._last_seq is not None and msg.seq <= self._last_seq:
                        continue  # replayed after a reconnect, already delivered
                    self._last_seq = msg.seq
                else:
                    await self._on_control_event(msg)
                    if self._follow and msg.event == "session_ended" and follows(msg.reason):
                        await self._switch()
                        continue
                yield msg
                if isinstance(msg, ControlEvent) and msg.event == "session_ended":
                    early = False
                    return
        finally:
            # Outside `async with` nothing else would stop the session after a `break`.
            if early and owned:
                try:
                    await self.stop()
                except LogFleetError as e:
                    warnings.warn(f"logfleet: {e}", RuntimeWarning, stacklevel=2)

    async def _on_control_event(self, event: ControlEvent) -> None:
        if event.event == "session_ending":
            self.seconds_remaining = event.seconds_remaining
            if self._on_ending is not None:
                await _maybe_await(self._on_ending(int(event.seconds_remaining or 0)))
        elif event.event == "session_ended" and not (self._follow and follows(event.reason)):
            self.ended_reason = event.reason or "unknown"
            untrack(self)
        elif event.event == "logs_dropped":
            self.logs_dropped += int(event.count or 0)
        if self._on_control is not None:
            await _maybe_await(self._on_control(event))

    async def __aiter__(self) -> AsyncIterator[LogEntry]:
        async for msg in self.messages():
            if isinstance(msg, LogEntry):
                yield msg

    async def stop(self) -> None:
        """Stops the session on the host (if still running) and closes the stream; raises
        :class:`~logfleet.LogFleetError` when it could not be stopped."""
        try:
            await self._stop_session()
        finally:
            if self._ws is not None:
                await self._ws.close()

    async def _stop_session(self) -> None:
        if self._next is not None:
            upcoming, self._next = self._next[0], None
            try:
                await self._client.stop(upcoming.id)
            except LogFleetError as e:
                if not is_gone(e):
                    log.warning("could not stop session %s: %s", upcoming.id, e)
        if self.session is None or self.ended_reason is not None or self._stopped:
            return
        session = self.session
        try:
            await self._client.stop(session.id)
        except LogFleetError as e:
            if not is_gone(e):
                if not is_transient(e):
                    raise
                backoff = Backoff()
                deadline = time.monotonic() + STOP_TIMEOUT
                while True:
                    delay = backoff.delay()
                    if time.monotonic() + delay >= deadline:
                        raise LogFleetError(
                            e.code, not_stopped_message(session.id, session.expires_at, e), e.status
                        ) from e
                    await asyncio.sleep(delay)
                    try:
                        # A fresh connection: the pooled one may be the broken one.
                        async with httpx.AsyncClient(
                            base_url=self._client.base_url,
                            headers={"Authorization": f"Bearer {self._client.token}"},
                            timeout=max(deadline - time.monotonic(), 0.1),
                        ) as http:
                            response_body(
                                await http.post(
                                    "/api/v1/stream/stop", json={"session_id": session.id}
                                )
                            )
                        break
                    except httpx.HTTPError as retry_error:
                        e = LogFleetConnectionError(
                            f"cannot reach the host at {self._client.base_url}: {retry_error}"
                        )
                    except LogFleetError as retry_error:
                        if is_gone(retry_error):
                            break
                        if not is_transient(retry_error):
                            raise
                        e = retry_error
        self._stopped = True
        untrack(self)

    def _stop_at_exit(self) -> None:
        if self.session is None or self.ended_reason is not None or self._stopped:
            return
        try:
            stop_blocking(self._client.base_url, self._client.token, self.session.id)
        except LogFleetError as e:
            raise LogFleetError(
                e.code, not_stopped_message(self.session.id, self.session.expires_at, e), e.status
            ) from e
        self._stopped = True
        untrack(self)

    def __del__(self) -> None:
        try:
            self._stop_at_exit()
        except Exception as e:  # noqa: BLE001 — a finalizer can only warn
            warnings.warn(f"logfleet: {e}", RuntimeWarning, stacklevel=1)

    async def __aenter__(self) -> "AsyncStream":
        self._entered = True
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

"""The synchronous client: :class:`Client` and its :class:`Stream`."""

from __future__ import annotations

import time
import warnings
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Type, Union
from urllib.parse import quote

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

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

__all__ = ["Client", "Stream"]


class Client:
    """A synchronous client of one LogFleet host.

    Args:
        token: A user JWT. Defaults to ``$LOGFLEET_TOKEN``.
        base_url: The host, e.g. ``https://api.logfleet.io``. Defaults to ``$LOGFLEET_URL``,
            then ``http://127.0.0.1:8080``.
        http_timeout: Seconds one REST call may take.

    Use it as a context manager (or call :meth:`close`) to release its connection pool.
    """

    def __init__(
        self,
        token: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        http_timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.token, self.base_url = resolve_config(token, base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=http_timeout,
        )

    # REST -----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise LogFleetConnectionError(f"cannot reach the host at {self.base_url}: {e}") from e
        return response_body(response)

    def agents(self) -> List[Agent]:
        """Every agent of the token's organisation."""
        body = self._request("GET", "/api/v1/agents")
        return [Agent.from_json(a) for a in body["agents"]]

    def agent(self, agent_id: str) -> Agent:
        """One agent, by UUID or name. Raises :class:`~logfleet.NotFoundError`."""
        body = self._request("GET", f"/api/v1/agents/{quote(agent_id, safe='')}")
        return Agent.from_json(body["agent"])

    def sessions(self) -> List[SessionSummary]:
        """The organisation's active streaming sessions."""
        body = self._request("GET", "/api/v1/stream/sessions")
        return [SessionSummary.from_json(s) for s in body["sessions"]]

    def start(
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
        """Starts a session without connecting to it (see :meth:`start_stream`)."""
        body = self._request(
            "POST",
            "/api/v1/stream/start",
            json=start_body(
                agent_id, timeout, filters, limits, backfill, agent_ids, selector
            ),
        )
        return Session.from_json(body["session"])

    def stop(self, session_id: str) -> Session:
        """Stops a session. Its clients receive ``session_ended`` with reason ``stopped``."""
        body = self._request("POST", "/api/v1/stream/stop", json={"session_id": session_id})
        return Session.from_json(body["session"])

    # Streaming ------------------------------------------------------------------------------

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
    ) -> "Stream":
        """A stream of an agent's logs, to use with ``with``.

        The session starts when the ``with`` block is entered (or iteration begins) and is
        stopped when the block is left. Iterating yields :class:`~logfleet.LogEntry` objects
        and ends when the session ends.

        Args:
            agent_id: The agent's UUID or name (or give ``agent_ids`` or ``selector``).
            agent_ids: A fleet session on these agents (UUIDs or names).
            selector: A fleet session on every agent matching ``{"labels": {...}, "name":
                "GLOB"}``, also those that come online during it. ``follow`` is for one
                agent only (``seq`` is per session in a fleet).
            timeout: Session length in seconds (1..3600, default 300).
            filters: ``{"level": [...], "source": "..." or [...], "pattern": "regex",
                "plugins": [{"name": ..., "config": ...}]}``.
            limits: ``{"lines_per_second": N, "bytes_per_second": N}``.
            backfill: First yield the N (1..10000) most recent matching lines already in the
                agent's files, oldest first (``entry.backfill`` is true), then a
                ``backfill_done`` control event, then the live lines. Sessions that continue
                it (``follow``) ask for none.
            on_ending: Called with ``seconds_remaining`` when the session warns it will end.
            on_control: Called with every :class:`~logfleet.ControlEvent`.
            follow: Keep streaming past the session's end: the next session (same request)
                starts shortly before each one expires, without gap or duplicate, until the
                stream is stopped. An offline agent or unreachable host is waited out.
        """
        return Stream(
            self,
            start_body(agent_id, timeout, filters, limits, backfill, agent_ids, selector),
            on_ending,
            on_control,
            follow,
        )

    def start_stream(
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
    ) -> "Stream":
        """Starts a session and connects to it now. Call :meth:`Stream.stop` when done."""
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
        stream.start()
        return stream

    def close(self) -> None:
        """Releases the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stream:
    """One session's log stream. Iterate it for :class:`~logfleet.LogEntry` objects.

    A stream that breaks is reopened by itself (see :mod:`logfleet._resume`): iteration goes on
    with the lines missed meanwhile, none twice; ``logs_dropped`` control events say what the
    host could no longer replay. The session is stopped on the host when the ``with`` block is
    left, when iteration outside a ``with`` block ends early (``break``, an exception), when
    the stream is garbage-collected, and at interpreter exit; :meth:`stop` raises if it cannot.

    Attributes:
        session: The session, once started.
        ended_reason: ``"timeout"``, ``"stopped"``, ``"shutdown"`` or ``"filter_failed"`` once
            the session ended.
        seconds_remaining: Set when the host warned that the session is ending.
        reconnects: How many times the stream was reopened after breaking.
        logs_dropped: Lines the host reported as dropped (``logs_dropped`` events), in all.
    """

    def __init__(
        self,
        client: Client,
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
        # With follow: the session started to take over, when it expires, and when to try
        # starting it again after a failure.
        self._next: Optional[Tuple[Session, float]] = None
        self._renew_retry: Optional[float] = None
        self._renew_backoff = Backoff()
        self._request = request
        self._on_ending = on_ending
        self._on_control = on_control
        self._ws: Optional[ClientConnection] = None
        self._resources = ExitStack()
        self._entered = False
        self._stopped = False
        self._last_seq: Optional[int] = None
        # When the session expires by this machine's clock (monotonic seconds).
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

    def start(self) -> "Stream":
        """Starts the session and connects to its WebSocket. Does nothing if already started."""
        if self.session is not None:
            return self
        self.session, self._expires = self._start_session()
        track(self)
        try:
            self._ws = self._connect(self.session, None)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_session(self) -> Tuple[Session, float]:
        """Starts a session with the stream's request; returns it and its expiry."""
        expires = time.monotonic() + self._request["timeout_seconds"]
        session = self._client.start(
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
        """Seconds until the next session should be started; ``None`` when not due at all."""
        if not self._follow or self._next is not None:
            return None
        due = renewal_due(self._expires, self._request["timeout_seconds"])
        if self._renew_retry is not None:
            due = max(due, self._renew_retry)
        return max(due - time.monotonic(), 0.0)

    def _renew(self) -> None:
        """Starts the session that takes over; a transient failure is logged once and retried
        later while the current session streams on."""
        try:
            self._next = self._start_session()
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

    def _switch(self) -> None:
        """After the current session ended (following): streams the next one from the last
        ``seq`` delivered, starting it first if it is not running yet."""
        assert self.session is not None
        ended = self.session.id
        self._resources.close()
        self._resources = ExitStack()
        while True:
            if self._next is None:
                log.warning(
                    "session %s ended before the next one started; lines read meanwhile are "
                    "not streamed",
                    ended,
                )
                self._next = self._start_retrying()
            self.session, self._expires = self._next
            self._next = None
            self._renew_retry = None
            self._renew_backoff = Backoff()
            if self._reconnect(None):
                self.sessions_followed += 1
                return

    def _start_retrying(self) -> Tuple[Session, float]:
        """Starts a session, waiting out transient failures (logged once) with backoff."""
        backoff = Backoff()
        while True:
            try:
                started = self._start_session()
            except LogFleetError as e:
                if not is_transient(e):
                    raise
                if backoff.failures == 0:
                    log.warning("cannot start a session: %s; retrying until it can", e)
                time.sleep(backoff.delay())
                continue
            if backoff.failures:
                log.warning("started session %s", started[0].id)
            return started

    def _connect(self, session: Session, since_seq: Optional[int]) -> ClientConnection:
        try:
            # websockets wants the connection used as a context manager; the stack closes
            # every connection this stream opened when it stops.
            return self._resources.enter_context(
                connect(
                    ws_url(session.websocket_url, since_seq),
                    additional_headers={"Authorization": f"Bearer {self._client.token}"},
                    open_timeout=HTTP_TIMEOUT,
                    close_timeout=CLOSE_TIMEOUT,
                )
            )
        except InvalidStatus as e:
            raise handshake_error(e.response.status_code, e.response.body) from e
        except (OSError, EOFError, WebSocketException, TimeoutError) as e:
            # EOFError: websockets 14 raises it bare for a connection cut mid-handshake.
            raise LogFleetConnectionError(
                f"cannot connect to {session.websocket_url}: {e}"
            ) from e

    def _recv(self) -> Optional[Union[str, bytes]]:
        """The next frame; ``None`` when the stream is over. Reconnects a broken stream."""
        while True:
            assert self._ws is not None and self.session is not None
            try:
                wait = self._until_renewal()
                return self._ws.recv(wait) if wait is not None else self._ws.recv()
            except TimeoutError:
                self._renew()
                continue
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                if self.ended_reason is not None or code == 1000:
                    return None
                cause = closed_error(self.session.id, code, e.rcvd.reason if e.rcvd else "")
                if self._reconnect(cause):
                    continue
                # The session ended while this client was away.
                if self._follow:
                    self._switch()
                    continue
                self.ended_reason = ended_while_away(self._expires)
                untrack(self)
                return None

    def _reconnect(self, cause: Optional[StreamClosedError]) -> bool:
        """Reopens the stream after ``cause`` (``None``: opens the session just switched to),
        resuming after the last ``seq`` delivered. ``False`` when the session ended meanwhile;
        raises when it cannot be reached in time."""
        assert self.session is not None
        if self._ws is not None and cause is not None:
            self._ws.close()
        backoff = Backoff()
        while True:
            try:
                self._ws = self._connect(self.session, since(self._last_seq))
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
            time.sleep(backoff.delay())

    def messages(self) -> Iterator[Message]:
        """Every message, logs and control events, until the session ends."""
        # A stream whose iteration started it (`for log in client.stream(...)`) is stopped when
        # that iteration ends early: nothing else would stop it. Streams started by `with` or
        # `start_stream()` stay running until those stop them.
        owned = self.session is None and not self._entered
        self.start()
        early = True
        try:
            while True:
                text = self._recv()
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
                    self._on_control_event(msg)
                    if (
                        self._follow
                        and msg.event == "session_ended"
                        and follows(msg.reason)
                    ):
                        self._switch()
                        continue
                yield msg
                if isinstance(msg, ControlEvent) and msg.event == "session_ended":
                    early = False
                    return
        finally:
            # Outside a `with` block nothing else would stop the session after a `break`.
            if early and owned:
                try:
                    self.stop()
                except LogFleetError as e:
                    warnings.warn(f"logfleet: {e}", RuntimeWarning, stacklevel=2)

    def _on_control_event(self, event: ControlEvent) -> None:
        if event.event == "session_ending":
            self.seconds_remaining = event.seconds_remaining
            if self._on_ending is not None:
                self._on_ending(int(event.seconds_remaining or 0))
        elif event.event == "session_ended" and not (self._follow and follows(event.reason)):
            self.ended_reason = event.reason or "unknown"
            untrack(self)
        elif event.event == "logs_dropped":
            self.logs_dropped += int(event.count or 0)
        if self._on_control is not None:
            self._on_control(event)

    def __iter__(self) -> Iterator[LogEntry]:
        for msg in self.messages():
            if isinstance(msg, LogEntry):
                yield msg

    def stop(self) -> None:
        """Stops the session on the host (if it is still running) and closes the stream.
        Retried on a fresh connection; raises :class:`~logfleet.LogFleetError` saying so when
        the session could not be stopped (it then runs until it expires)."""
        try:
            self._stop_session()
        finally:
            self._resources.close()

    def _stop_session(self) -> None:
        if self._next is not None:
            # The session started to take over from the current one (following).
            upcoming, self._next = self._next[0], None
            try:
                self._client.stop(upcoming.id)
            except LogFleetError as e:
                if not is_gone(e):
                    log.warning("could not stop session %s: %s", upcoming.id, e)
        if self.session is None or self.ended_reason is not None or self._stopped:
            return
        try:
            self._client.stop(self.session.id)
        except LogFleetError as e:
            if not is_gone(e):
                if not is_transient(e):
                    raise
                try:
                    stop_blocking(self._client.base_url, self._client.token, self.session.id)
                except LogFleetError as final:
                    raise LogFleetError(
                        final.code,
                        not_stopped_message(self.session.id, self.session.expires_at, final),
                        final.status,
                    ) from final
        self._stopped = True
        untrack(self)

    def _stop_at_exit(self) -> None:
        """Stops the session from a finalizer or at exit: on a connection of its own, since
        the client's pool may be closed by then."""
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

    def __enter__(self) -> "Stream":
        self._entered = True
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

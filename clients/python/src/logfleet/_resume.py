"""What the sync and async streams share about surviving the real world: when to retry,
which failures are worth it, resuming without duplicates, and stopping a session on a fresh
connection (also from a finalizer or at interpreter exit, where no event loop can be used).

Policy:

- A stream that breaks without ``session_ended`` is reopened with ``?since_seq=`` the last
  ``seq`` delivered (0 before the first), so the host replays what was missed; lines at or
  below that ``seq`` are skipped, so none is delivered twice. What the host's replay buffer no
  longer held arrives as a ``logs_dropped`` control event.
- Delays grow from :data:`INITIAL_BACKOFF` to :data:`MAX_BACKOFF`, each drawn from the upper
  half of its nominal value, so clients cut off together do not return in lock step.
- Reconnecting gives up :data:`EXPIRY_GRACE` seconds after the session's expiry (by this
  machine's clock); a session the host no longer knows (404) ended meanwhile.
- With ``follow=True`` the next session (same request) is started :data:`HANDOVER_LEAD` seconds
  before the current one expires and streamed from the last ``seq`` once the current one ends,
  as ``logfleet stream --follow`` does; a session ended by a host shutdown is followed too. When
  the next session cannot be started (agent offline, host unreachable) that is logged once
  (logger ``logfleet``) and retried with backoff until it can.
- Stopping is retried on a fresh connection for up to :data:`STOP_TIMEOUT` seconds in all; if
  it still fails the caller is told (an exception from ``stop()``, a ``ResourceWarning`` from a
  finalizer, a line on stderr at exit).
"""

from __future__ import annotations

import atexit
import logging
import random
import sys
import time
import weakref
from typing import Any, Optional, Protocol

import httpx

from ._common import response_body
from ._errors import LogFleetConnectionError, LogFleetError, StreamClosedError

INITIAL_BACKOFF = 0.1
"""Seconds before the first retry."""

MAX_BACKOFF = 5.0
"""The longest wait between two attempts, in seconds."""

EXPIRY_GRACE = 10.0
"""Seconds past a session's expiry (by this machine's clock) reconnecting is still tried."""

STOP_TIMEOUT = 5.0
"""Seconds stopping one session may take in all, retries included."""

HANDOVER_LEAD = 3.0
"""With ``follow=True``: seconds before a session expires that the next one is started (half
way through a session shorter than twice this), so the two overlap and no line falls between
them; the overlap is replayed from the host's buffer and de-duplicated by ``seq``."""

log = logging.getLogger("logfleet")
"""Where a following stream says what it waits out (agent offline, host unreachable)."""


def renewal_due(expires: float, timeout_seconds: float) -> float:
    """When (monotonic seconds) to start the session that takes over from one expiring at
    ``expires`` that lasts ``timeout_seconds``."""
    return expires - min(HANDOVER_LEAD, timeout_seconds / 2)


def follows(reason: Optional[str]) -> bool:
    """Whether a following stream carries on after a session ended for ``reason``."""
    return reason in ("timeout", "shutdown")


class Backoff:
    """Exponential backoff with jitter (see the module docs)."""

    def __init__(self) -> None:
        self._next = INITIAL_BACKOFF
        self.failures = 0

    def delay(self) -> float:
        nominal = self._next
        self._next = min(self._next * 2, MAX_BACKOFF)
        self.failures += 1
        return nominal / 2 + random.uniform(0, nominal / 2)


def is_transient(error: BaseException) -> bool:
    """Whether trying again later may succeed: network trouble, a broken stream, a busy host or
    a proxy's 502/503/504. Refusals (auth, not found, invalid) are final."""
    if isinstance(error, (LogFleetConnectionError, StreamClosedError)):
        return True
    if isinstance(error, LogFleetError):
        return error.status in (409, 429, 502, 503, 504)
    return isinstance(error, (OSError, TimeoutError))


def is_gone(error: BaseException) -> bool:
    """Whether the host says the session no longer exists (it ended)."""
    return isinstance(error, LogFleetError) and error.code == "session_not_found"


def stop_blocking(base_url: str, token: str, session_id: str, timeout: float = STOP_TIMEOUT) -> None:
    """Stops a session with plain blocking HTTP, each attempt on a new connection, retrying
    transient failures until ``timeout``. Usable anywhere: finalizers, ``atexit``, threads.
    Raises :class:`LogFleetError` when it finally cannot."""
    deadline = time.monotonic() + timeout
    backoff = Backoff()
    while True:
        remaining = deadline - time.monotonic()
        try:
            with httpx.Client(
                base_url=base_url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=max(remaining, 0.1),
            ) as http:
                response_body(http.post("/api/v1/stream/stop", json={"session_id": session_id}))
            return
        except httpx.HTTPError as e:
            error: LogFleetError = LogFleetConnectionError(
                f"cannot reach the host at {base_url}: {e}"
            )
        except LogFleetError as e:
            if is_gone(e):
                return
            error = e
        delay = backoff.delay()
        if not is_transient(error) or time.monotonic() + delay >= deadline:
            raise error
        time.sleep(delay)


class _Stoppable(Protocol):
    def _stop_at_exit(self) -> None: ...


_live: "weakref.WeakSet[Any]" = weakref.WeakSet()
"""Streams whose session may still be running: stopped at interpreter exit."""


def track(stream: _Stoppable) -> None:
    _live.add(stream)


def untrack(stream: _Stoppable) -> None:
    _live.discard(stream)


@atexit.register
def _stop_live_sessions() -> None:
    for stream in list(_live):
        try:
            stream._stop_at_exit()
        except Exception as e:  # noqa: BLE001 — at exit, saying it is all that is left
            print(f"logfleet: {e}", file=sys.stderr)


def not_stopped_message(session_id: str, expires_at: str, error: BaseException) -> str:
    """The one plain sentence for a session that could not be stopped."""
    return (
        f"could not stop session {session_id} ({error}); it stays active on the host "
        f"until {expires_at}"
    )


def since(last_seq: Optional[int]) -> int:
    """The ``since_seq`` to resume after ``last_seq`` (0 before any line: replay everything)."""
    return 0 if last_seq is None else last_seq


def ended_while_away(expires: float) -> str:
    """The ``ended_reason`` of a session found gone on reconnecting: ``"timeout"`` if it was
    due to expire by then (by this machine's clock, ``expires`` monotonic seconds), else
    ``"stopped"``."""
    return "timeout" if time.monotonic() >= expires else "stopped"

"""The Python client when the world misbehaves: a stream cut mid-flow, and every way a stream
can end leaving no session running on the host (see conftest.py for the proxy)."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import subprocess
import sys
import threading
from typing import List, Set, Tuple

import pytest

from logfleet import AsyncClient, Client, LogEntry, LogFleetError

from conftest import Env, Proxy, Writer

LINE_NUMBER = re.compile(r"line (\d+)$")


def active(env: Env) -> List[str]:
    """Ids of the active sessions, asked of the host directly (not through the proxy)."""
    with Client(token=env.token, base_url=env.url) as client:
        return [s.id for s in client.sessions()]


def numbered(log: LogEntry) -> Tuple[int, int]:
    match = LINE_NUMBER.search(log.message)
    assert match, log.message
    return log.seq, int(match.group(1))


def assert_exactly_once(seen: List[Tuple[int, int]]) -> None:
    first_n = seen[0][1]
    assert [n for _, n in seen] == list(range(first_n, first_n + len(seen))), seen
    # Other suites write to the same file, so seq (per line read) grows by at least one.
    assert all(a[0] < b[0] for a, b in zip(seen, seen[1:])), seen


def test_a_stream_cut_three_times_delivers_every_line_exactly_once(
    env: Env, writer: Writer, proxy: Proxy
) -> None:
    """Cut three times mid-flow, the stream resumes by itself; every line written meanwhile
    arrives exactly once, and leaving the `with` block stops the session."""
    restorers: List[threading.Timer] = []
    seen: List[Tuple[int, int]] = []
    with Client(token=env.token, base_url=proxy.url) as client:
        with client.stream(
            agent_id=env.agent_id, timeout=60, filters={"pattern": writer.tag}
        ) as stream:
            for log in stream:
                seen.append(numbered(log))
                if len(seen) in (20, 40, 60):
                    proxy.cut()
                    # Down long enough that the first reconnect attempts are refused.
                    restorer = threading.Timer(0.3, proxy.restore)
                    restorers.append(restorer)
                    restorer.start()
                # Lines received before a cut may still be read after it: go on until the
                # third reconnect has happened too.
                if len(seen) >= 80 and stream.reconnects == 3:
                    break
            session_id = stream.session_id
        for restorer in restorers:
            restorer.join()
    assert stream.reconnects == 3
    assert_exactly_once(seen)
    assert session_id not in active(env)


def test_break_outside_with_stops_the_session(env: Env, writer: Writer) -> None:
    """`for log in client.stream(...): break` without `with` stops the session it started."""
    with Client(token=env.token, base_url=env.url) as client:
        stream = client.stream(agent_id=env.agent_id, timeout=60, filters={"pattern": writer.tag})
        for _ in stream:
            break
        assert stream.session_id is not None
        assert stream.session_id not in active(env)


def test_an_exception_in_with_stops_the_session(env: Env, writer: Writer) -> None:
    """An exception leaving the `with` block stops the session."""
    with Client(token=env.token, base_url=env.url) as client:
        with pytest.raises(KeyError):
            with client.stream(agent_id=env.agent_id, timeout=60) as stream:
                for _ in stream:
                    raise KeyError("boom")
        assert stream.session_id not in active(env)


def test_garbage_collection_stops_the_session(env: Env) -> None:
    """A started stream nobody references any more is stopped when collected."""
    with Client(token=env.token, base_url=env.url) as client:
        stream = client.start_stream(agent_id=env.agent_id, timeout=60)
        session_id = stream.session_id
        assert session_id in active(env)
        del stream
        gc.collect()
        assert session_id not in active(env)


def test_stop_after_a_broken_socket_retries_until_the_host_answers(
    env: Env, proxy: Proxy
) -> None:
    """`stop()` with the connection to the host broken retries on fresh connections and
    stops the session once the host is reachable again."""
    with Client(token=env.token, base_url=proxy.url) as client:
        stream = client.start_stream(agent_id=env.agent_id, timeout=60)
        proxy.cut()
        restorer = threading.Timer(0.5, proxy.restore)
        restorer.start()
        stream.stop()
        restorer.join()
        assert stream.session_id not in active(env)


def test_a_stop_that_cannot_reach_the_host_says_so(env: Env, proxy: Proxy) -> None:
    """When the host stays unreachable, `stop()` raises, naming the session left running."""
    with Client(token=env.token, base_url=proxy.url) as client:
        stream = client.start_stream(agent_id=env.agent_id, timeout=60)
        session_id = stream.session_id
        assert session_id is not None
        proxy.cut()
        with pytest.raises(LogFleetError, match=f"could not stop session {session_id}"):
            stream.stop()
        proxy.restore()
        assert session_id in active(env)  # it told the truth
        client.stop(session_id)


def test_process_exit_stops_the_session(env: Env) -> None:
    """A program that exits with a stream still running stops its session on the way out."""
    script = (
        "import os, logfleet\n"
        "c = logfleet.Client()\n"
        "s = c.start_stream(agent_id=os.environ['LOGFLEET_AGENT_ID'], timeout=60)\n"
        "print(s.session_id, flush=True)\n"
        "KEEP = s\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    session_id = out.stdout.strip()
    assert session_id.startswith("sess_"), out
    assert session_id not in active(env)


def test_async_break_and_exception_stop_the_session(env: Env, writer: Writer) -> None:
    """`async for` ended by `break` outside `async with`, and an exception inside it, stop
    the session."""

    async def main() -> List[str]:
        ids: List[str] = []
        async with AsyncClient(token=env.token, base_url=env.url) as client:
            stream = client.stream(
                agent_id=env.agent_id, timeout=60, filters={"pattern": writer.tag}
            )
            async for _ in stream:
                break
            await asyncio.sleep(0)  # let the loop finalize the abandoned iterator
            assert stream.session_id is not None
            ids.append(stream.session_id)
            with pytest.raises(KeyError):
                async with client.stream(agent_id=env.agent_id, timeout=60) as inner:
                    async for _ in inner:
                        raise KeyError("boom")
            assert inner.session_id is not None
            ids.append(inner.session_id)
        return ids

    ids = asyncio.run(main())
    still = active(env)
    assert not [i for i in ids if i in still]


def test_async_stream_resumes_after_a_cut(env: Env, writer: Writer, proxy: Proxy) -> None:
    """The asyncio stream resumes a cut stream too, without losing or repeating a line."""

    async def main() -> Tuple[List[Tuple[int, int]], int]:
        seen: List[Tuple[int, int]] = []
        async with AsyncClient(token=env.token, base_url=proxy.url) as client:
            async with client.stream(
                agent_id=env.agent_id, timeout=60, filters={"pattern": writer.tag}
            ) as stream:
                async for log in stream:
                    seen.append(numbered(log))
                    if len(seen) == 10:
                        proxy.cut()
                        asyncio.get_running_loop().call_later(0.3, proxy.restore)
                    if len(seen) == 30:
                        break
        return seen, stream.reconnects

    seen, reconnects = asyncio.run(main())
    assert reconnects == 1
    assert_exactly_once(seen)


def test_follow_crosses_sessions_without_gap_or_duplicate(env: Env, writer: Writer) -> None:
    """`follow=True` carries a stream across session ends: every line once, in order, and
    no session left running after `with`."""
    seen: List[Tuple[int, int]] = []
    sessions: Set[str] = set()
    with Client(token=env.token, base_url=env.url) as client:
        with client.stream(
            agent_id=env.agent_id, timeout=2, filters={"pattern": writer.tag}, follow=True
        ) as stream:
            for log in stream:
                seen.append(numbered(log))
                assert stream.session_id is not None
                sessions.add(stream.session_id)
                if stream.sessions_followed >= 2 and len(seen) > 150:
                    break
        assert stream.ended_reason is None
    assert len(sessions) == 3
    assert_exactly_once(seen)
    assert not sessions & set(active(env))


def test_async_follow_crosses_sessions(env: Env, writer: Writer) -> None:
    """The asyncio stream follows across session ends too: every line once, in order."""

    async def main() -> Tuple[List[Tuple[int, int]], Set[str]]:
        seen: List[Tuple[int, int]] = []
        sessions: Set[str] = set()
        async with AsyncClient(token=env.token, base_url=env.url) as client:
            async with client.stream(
                agent_id=env.agent_id, timeout=2, filters={"pattern": writer.tag}, follow=True
            ) as stream:
                async for log in stream:
                    seen.append(numbered(log))
                    assert stream.session_id is not None
                    sessions.add(stream.session_id)
                    if stream.sessions_followed >= 1 and len(seen) > 80:
                        break
        return seen, sessions

    seen, sessions = asyncio.run(main())
    assert len(sessions) == 2
    assert_exactly_once(seen)
    assert not sessions & set(active(env))

"""The Python client against a real host and agent (see conftest.py)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import List

import pytest

from logfleet import (
    AsyncClient,
    AuthError,
    ControlEvent,
    Client,
    InvalidRequestError,
    LogEntry,
    LogFleetConnectionError,
    NotFoundError,
)

from conftest import Env, Writer


def test_reference_snippet_streams_and_stops_on_exit(env: Env, writer: Writer) -> None:
    client = Client(token=env.token, base_url=env.url)
    seen: List[LogEntry] = []
    with client.stream(
        agent_id=env.agent_id,
        timeout=300,
        filters={"level": ["ERROR"]}
    ) as stream:
        for log in stream:
            print(f"[{log.level}] {log.message}")
            if writer.tag in log.message:
                seen.append(log)
            if len(seen) == 3:
                break
        session_id = stream.session_id
    assert all(log.level == "ERROR" and log.source == "app" for log in seen)
    assert [log.seq for log in seen] == sorted(log.seq for log in seen)
    first = seen[0]
    assert first.timestamp.tzinfo is not None and first.timestamp.utcoffset() == timedelta(0)
    assert first.metadata.file == env.log_file
    assert first.metadata.line > 0
    # Leaving the `with` block stopped the session on the host.
    assert session_id not in [s.id for s in client.sessions()]
    client.close()


def test_timeout_calls_on_ending_and_ends_iteration(env: Env, writer: Writer) -> None:
    warnings: List[int] = []
    with Client(token=env.token, base_url=env.url) as client:
        stream = client.start_stream(
            agent_id=env.agent_id,
            timeout=2,
            filters={"source": "app", "pattern": writer.tag},
            on_ending=warnings.append,
        )
        count = sum(1 for _ in stream)  # ends by itself when the session times out
        stream.stop()
    assert stream.ended_reason == "timeout"
    assert warnings and 0 < warnings[0] <= 2
    assert count > 0


def test_stop_ends_the_stream(env: Env, writer: Writer) -> None:
    with Client(token=env.token, base_url=env.url) as client:
        stream = client.start_stream(agent_id=env.agent_id, timeout=60)
        assert stream.session_id in [s.id for s in client.sessions()]
        stopper = None
        for _ in stream:
            assert stream.session_id is not None
            stopper = threading.Thread(target=client.stop, args=(stream.session_id,))
            stopper.start()
            break
        for _ in stream:  # drains to session_ended
            pass
        assert stopper is not None
        stopper.join()  # never outlives the client it uses
        assert stream.ended_reason == "stopped"


def test_fleet_session_by_agent_ids(env: Env, writer: Writer) -> None:
    """A fleet session (``agent_ids``) lists its members, numbers its records itself
    (``seq`` one by one) and keeps each record's agent and the agent's own ``seq``."""
    with Client(token=env.token, base_url=env.url) as client:
        with client.stream(
            agent_ids=[env.agent_id], timeout=60, filters={"pattern": writer.tag}
        ) as stream:
            seen: List[LogEntry] = []
            for log in stream:
                seen.append(log)
                if len(seen) == 3:
                    break
            session = next(s for s in client.sessions() if s.id == stream.session_id)
    assert session.agent_ids is not None and len(session.agent_ids) == 1
    assert all(log.agent_id == session.agent_ids[0] for log in seen)
    assert all(log.agent_seq is not None for log in seen)
    assert [log.seq for log in seen] == list(range(seen[0].seq, seen[0].seq + 3))


def test_agents_and_errors(env: Env) -> None:
    with Client(token=env.token, base_url=env.url) as client:
        agents = client.agents()
        agent = next(a for a in agents if env.agent_id in (a.id, a.name))
        assert agent.status == "online"
        assert "app" in [s.name for s in agent.sources]
        assert client.agent(env.agent_id).id == agent.id

        with pytest.raises(NotFoundError) as e:
            client.start_stream(agent_id="no-such-agent")
        assert e.value.code == "agent_not_found" and e.value.status == 404
        with pytest.raises(InvalidRequestError) as e2:
            client.start_stream(agent_id=env.agent_id, filters={"pattern": "("})
        assert e2.value.code == "invalid_filter"
        with pytest.raises(NotFoundError):
            client.stop("sess_does_not_exist")

    with pytest.raises(AuthError) as e3:
        Client(token="not-a-jwt", base_url=env.url).agents()
    assert e3.value.status == 401
    with pytest.raises(LogFleetConnectionError):
        Client(token=env.token, base_url="http://127.0.0.1:9").agents()


def test_async_client(env: Env, writer: Writer) -> None:
    async def main() -> List[LogEntry]:
        endings: List[int] = []
        seen: List[LogEntry] = []
        async with AsyncClient(token=env.token, base_url=env.url) as client:
            async with client.stream(
                agent_id=env.agent_id,
                timeout=2,
                filters={"level": ["ERROR"], "pattern": writer.tag},
                on_ending=endings.append,
            ) as stream:
                async for log in stream:
                    seen.append(log)
            assert stream.ended_reason == "timeout"
            assert endings
            assert stream.session_id not in [s.id for s in await client.sessions()]
            with pytest.raises(NotFoundError):
                await client.start_stream(agent_id="no-such-agent")
        return seen

    seen = asyncio.run(main())
    assert seen and all(log.level == "ERROR" for log in seen)


def test_backfill_comes_first_then_live(env: Env) -> None:
    """A stream asked for a backfill yields the most recent matching lines already in the file
    first, oldest first and flagged, then ``backfill_done``, then the live lines."""
    tag = "py-backfill-tag"
    with open(env.log_file, "a", encoding="utf-8") as f:
        for n in range(5):
            f.write(f"INFO {tag} earlier {n}\n")
    controls: List[ControlEvent] = []
    with Client(token=env.token, base_url=env.url) as client:
        with client.stream(
            agent_id=env.agent_id,
            timeout=60,
            filters={"pattern": tag},
            backfill=3,
            on_control=controls.append,
        ) as stream:
            got: List[LogEntry] = []
            for log in stream:
                got.append(log)
                if len(got) == 3:
                    with open(env.log_file, "a", encoding="utf-8") as f:
                        f.write(f"INFO {tag} live\n")
                if len(got) == 4:
                    break
    assert [(log.message, log.backfill) for log in got] == [
        (f"{tag} earlier 2", True),
        (f"{tag} earlier 3", True),
        (f"{tag} earlier 4", True),
        (f"{tag} live", False),
    ]
    done = [c for c in controls if c.event == "backfill_done"]
    assert len(done) == 1 and done[0].count == 3 and not done[0].truncated

"""Fixtures for tests against a real LogFleet host and agent.

The environment names them (``cargo test -p logfleet-cli --test clients`` sets these up):

- ``LOGFLEET_URL``, ``LOGFLEET_TOKEN``: the host and a user token;
- ``LOGFLEET_AGENT_ID``: an online agent;
- ``LOGFLEET_LOG_FILE``: a file that agent tails as source ``app``;
- ``LOGFLEET_PROXY_URL``, ``LOGFLEET_PROXY_CONTROL``: the same host through testkit's cuttable
  proxy, and ``host:port`` of the socket that cuts (``cut``) and restores (``restore``) it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import pytest

REQUIRED = (
    "LOGFLEET_URL",
    "LOGFLEET_TOKEN",
    "LOGFLEET_AGENT_ID",
    "LOGFLEET_LOG_FILE",
    "LOGFLEET_PROXY_URL",
    "LOGFLEET_PROXY_CONTROL",
)

WRITE_INTERVAL = 0.02
"""Seconds between lines the background writer appends."""

TEST_TIMEOUT = 15
"""No test may take longer than this many seconds (pytest has no default timeout)."""


@pytest.fixture(autouse=True)
def time_limit(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test that hangs instead of hanging the suite."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"{request.node.name} took over {TEST_TIMEOUT}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@dataclass
class Env:
    url: str
    token: str
    agent_id: str
    log_file: str
    proxy_url: str
    proxy_control: str


@pytest.fixture(scope="session")
def env() -> Env:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"missing environment {', '.join(missing)}: these tests need a running host and "
            "agent; run them with `cargo test -p logfleet-cli --test clients`",
            pytrace=False,
        )
    return Env(*(os.environ[name] for name in REQUIRED))


class Writer:
    """Appends ``INFO``/``ERROR`` lines with a running counter to the agent's file until
    stopped, so a stream always has fresh lines to deliver whenever its session becomes
    active on the agent."""

    def __init__(self, path: str, tag: str) -> None:
        self.path = path
        self.tag = tag
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            level = "ERROR" if n % 2 else "INFO"
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"{level} {self.tag} line {n}\n")
            n += 1
            time.sleep(WRITE_INTERVAL)

    def __enter__(self) -> "Writer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def writer(env: Env, request: pytest.FixtureRequest) -> Iterator[Writer]:
    with Writer(env.log_file, f"py-{request.node.name}") as w:
        yield w


class Proxy:
    """testkit's cuttable proxy in front of the host: :meth:`cut` closes every connection
    through it and refuses new ones until :meth:`restore`."""

    def __init__(self, url: str, control: str) -> None:
        self.url = url
        host, port = control.rsplit(":", 1)
        self._control = socket.create_connection((host, int(port)), timeout=5)
        self._answers = self._control.makefile("r")

    def _say(self, command: str) -> None:
        self._control.sendall(f"{command}\n".encode())
        assert self._answers.readline().strip() == "ok"

    def cut(self) -> None:
        self._say("cut")

    def restore(self) -> None:
        self._say("restore")

    def close(self) -> None:
        self.restore()
        self._answers.close()
        self._control.close()


@pytest.fixture
def proxy(env: Env) -> Iterator[Proxy]:
    p = Proxy(env.proxy_url, env.proxy_control)
    yield p
    p.close()

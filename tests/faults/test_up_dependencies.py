"""`agentlog up` supervises its dependencies: the embedded Postgres killed (by its pid, from
its data directory's postmaster.pid) is restarted in place, and meanwhile the api answers
503 with `Retry-After` at once; the embedded broker killed is reported within seconds and
restarted as a new log epoch, and meanwhile writes answer 503 and reads are served. After
either, a turn posted completes, and so does the turn in flight when the log was lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_up import _alive, _post, _start, _stop, _wait_stack


@dataclass
class Up:
    """A running `agentlog up`: its directory, process, api and development token."""

    cwd: Path
    proc: subprocess.Popen[bytes]
    api: str
    token: str

    def stack(self) -> dict[str, Any]:
        return dict(json.loads((self.cwd / ".agentlog" / "stack.json").read_text()))


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One `agentlog up` for the module, in a directory of its own."""
    cwd = tmp_path_factory.mktemp("up-deps")
    proc = _start(cwd)
    try:
        stack = _wait_stack(cwd, proc)
        yield Up(cwd, proc, stack["api_url"], stack["api_token"])
    finally:
        _stop(proc)


Answer = tuple[int, dict[str, str], dict[str, Any], float]


def _get(url: str, token: str, post: dict[str, Any] | None = None) -> Answer:
    """Status, headers, body and seconds taken of a GET (or a POST of `post`; errors are
    answers too)."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    if post is not None:
        headers |= {"content-type": "application/json", "Idempotency-Key": "while-down"}
    data = json.dumps(post).encode() if post is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, got, body = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, got, body = err.code, dict(err.headers), err.read()
    return status, {k.lower(): v for k, v in got.items()}, json.loads(body), time.monotonic() - started


@contextlib.contextmanager
def _held(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """`up` stopped (SIGSTOP), so that an outage lasts as long as the test looks at it."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def _unavailable(call: Callable[[], Answer]) -> list[Answer]:
    """Once `call` answers 503 (within 10 s), three more answers."""
    deadline = time.monotonic() + 10
    while (answer := call())[0] != 503:
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)
    return [call() for _ in range(3)]


def _assert_503_at_once(answers: list[Answer]) -> None:
    for status, headers, body, took in answers:
        assert status == 503 and headers["retry-after"] == "1", (status, body)
        assert headers["content-type"].startswith("application/problem+json") and took < 1.5, took


def _turn(api: str, session: str, key: str, token: str, within: float = 90) -> dict[str, Any]:
    """Post a turn and wait for it, posting again (same key) while the api answers 503."""
    deadline = time.monotonic() + within
    while True:
        try:
            return _post(f"{api}/v1/sessions/{session}/messages?wait=60", {"content": "hello"}, key, token)
        except urllib.error.HTTPError as err:
            if err.code != 503 or time.monotonic() > deadline:
                raise
            assert err.headers["Retry-After"] == "1"
            time.sleep(0.5)


def _until_said(cwd: Path, text: str, within: float, after: int = 0) -> float:
    """Seconds until `up` printed `text` (in its output past offset `after`)."""
    started = time.monotonic()
    while text not in (cwd / "up.out").read_text(errors="replace")[after:]:
        assert time.monotonic() - started < within, (cwd / "up.out").read_text()[after:]
        time.sleep(0.1)
    return time.monotonic() - started


def test_a_killed_postgres_is_restarted_and_the_api_answers_503_meanwhile(up: Up) -> None:
    cwd, proc, api, token = up.cwd, up.proc, up.api, up.token
    pgdata = cwd / ".agentlog" / "pg"
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    seen = len((cwd / "up.out").read_text(errors="replace"))
    with _held(proc):
        os.kill(postmaster, signal.SIGKILL)
        answers = _unavailable(lambda: _get(f"{api}/v1/sessions/pg-none/turns", token))
        answers.append(_get(f"{api}/readyz", token))
    _assert_503_at_once(answers)
    assert answers[-1][2]["detail"] == "the database does not answer"
    _until_said(cwd, "postgres restarted as pid", within=30, after=seen)
    restarted = int((pgdata / "postmaster.pid").read_text().split()[0])
    assert restarted != postmaster and _alive(restarted)
    _until_said(cwd, "workers resume on the restarted postgres", within=30, after=seen)
    assert "workers restarted on the restarted postgres" not in (cwd / "up.out").read_text()[seen:]
    assert "postgres died" in (cwd / ".agentlog" / "logs" / "up.log").read_text()
    after = _turn(api, "pg-after", "pg-after", token)
    assert after["status"] == "completed", after


def test_a_killed_broker_is_reported_within_seconds_and_turns_finish_on_the_new_log(up: Up) -> None:
    cwd, api, token = up.cwd, up.api, up.token
    broker = next(p["pid"] for p in up.stack()["processes"] if p["name"] == "broker")
    seen = len((cwd / "up.out").read_text(errors="replace"))
    # A turn in flight when the log is lost: its tool runs while the broker dies.
    slow = 'call Bash {"command": "sleep 3"}'
    accepted = _post(f"{api}/v1/sessions/in-flight/messages", {"content": slow}, "in-flight", token)
    time.sleep(1)
    with _held(up.proc):
        os.kill(broker, signal.SIGKILL)
        writes = _unavailable(lambda: _get(f"{api}/v1/sessions/down/messages", token, {"content": "hi"}))
        writes.append(_get(f"{api}/readyz", token))
        read = _get(f"{api}/v1/sessions/in-flight/turns", token)  # from the projection
    _assert_503_at_once(writes)
    assert writes[-1][2]["detail"] == "the event log does not answer" and read[0] == 200, read
    reported = _until_said(cwd, f"broker (pid {broker}) exited", within=10, after=seen)
    assert reported < 5, reported
    _until_said(cwd, "workers restarted on the new log", within=60, after=seen)
    assert "the event log" in (cwd / ".agentlog" / "logs" / "up.log").read_text()
    assert not _alive(broker)  # reaped, not a zombie
    assert next(p["pid"] for p in up.stack()["processes"] if p["name"] == "broker") != broker
    after = _turn(api, "broker-after", "broker-after", token)
    assert after["status"] == "completed", after
    deadline = time.monotonic() + 60
    turn = f"{api}/v1/sessions/in-flight/turns/{accepted['turn_id']}"
    while (status := _get(turn, token))[2].get("status") != "completed":
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert _get(f"{api}/v1/sessions/down", token)[0] == 404  # a 503 appended nothing
    # The session from before the new log goes on where Postgres has it.
    more = _turn(api, "pg-after", "pg-after-2", token)
    assert more["status"] == "completed" and "turn 2" in more["output_text"], more

"""`agentlog up` as a user runs it: one command, stack.json, restarts, clean stop, a second start."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from eventstore.models import OFFLINE_MODEL

ROOT = Path(__file__).resolve().parents[2]


def _start(cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLOG_", "ANTHROPIC_"))}
    with open(cwd / "up.out", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agentlog", "up", "--partitions", "2"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_stack(cwd: Path, proc: subprocess.Popen[bytes], within: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, (cwd / "up.out").read_text()
        if "ready;" in (cwd / "up.out").read_text(errors="replace").split("stopped")[-1]:
            return dict(json.loads((cwd / ".agentlog" / "stack.json").read_text()))
        time.sleep(0.2)
    raise AssertionError("agentlog up did not become ready:\n" + (cwd / "up.out").read_text())


def _post(url: str, body: dict[str, Any], key: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "content-type": "application/json",
            "Idempotency-Key": key,
            "Authorization": f"Bearer {token}",
        },
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return dict(json.loads(resp.read()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_up_answers_restarts_children_and_keeps_sessions_across_a_restart(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    try:
        stack = _wait_stack(tmp_path, proc)
        assert set(stack) >= {"api_url", "database_url", "kafka_bootstrap", "processes"}
        names = {p["name"] for p in stack["processes"]}
        assert names == {
            "broker",
            "api",
            "reactor",
            "model-worker",
            "tool-worker",
            "subagent-worker",
            "projector",
        }
        status = subprocess.run(
            [sys.executable, "-m", "agentlog", "status", "--json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(status.stdout) == stack
        api, token = stack["api_url"], stack["api_token"]
        assert token.startswith("agl_dev_")
        # No ANTHROPIC_API_KEY here: new sessions get the offline model, and `up` says so.
        assert stack["default_model"] == OFFLINE_MODEL
        assert f"model         {OFFLINE_MODEL}" in (tmp_path / "up.out").read_text()
        first = _post(f"{api}/v1/sessions/kept/messages?wait=30", {"content": "first words"}, "kept-0", token)
        assert first["status"] == "completed"

        # `agentlog top` finds every process through its registration, and scrapes each.
        # Without the AGENTLOG_* variables another test of this process may have left set (one
        # named a database on port 1): `top` must find the stack through stack.json.
        ran = subprocess.run(
            [sys.executable, "-m", "agentlog", "top", "--once", "--json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("AGENTLOG_")},
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        top = json.loads(ran.stdout)
        seen = {(i["role"], i["up"]) for i in top["instances"]}
        assert seen == {
            (role, True) for role in ("api", "reactor", "model", "tools", "subagents", "projector")
        }
        assert top["roles"]["reactor"]["work"] == 1 and top["roles"]["model"]["work"] == 1
        assert top["fleet"]["tokens_in"] > 0

        # SIGKILL a worker: it is restarted, the restart is logged, and turns still get answered.
        reactor = next(p["pid"] for p in stack["processes"] if p["name"] == "reactor")
        os.kill(reactor, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "reactor restarted" not in (tmp_path / "up.out").read_text():
            assert time.monotonic() < deadline, (tmp_path / "up.out").read_text()
            time.sleep(0.2)
        again = _post(
            f"{api}/v1/sessions/other/messages?wait=30", {"content": "after the kill"}, "o-0", token
        )
        assert again["status"] == "completed"
        pids = [
            p["pid"] for p in json.loads((tmp_path / ".agentlog" / "stack.json").read_text())["processes"]
        ]
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert not any(_alive(pid) for pid in pids), "a child outlived agentlog up"
    assert not (tmp_path / ".agentlog" / "stack.json").exists()

    proc = _start(tmp_path)
    try:
        stack = _wait_stack(tmp_path, proc)
        api = stack["api_url"]
        get = urllib.request.Request(f"{api}/v1/sessions/kept", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(get, timeout=10) as resp:
            kept = json.loads(resp.read())
        assert stack["api_token"] == token  # the same development token across restarts
        assert [m["role"] for m in kept["messages"]] == ["user", "assistant"]
        second = _post(
            f"{api}/v1/sessions/kept/messages?wait=30", {"content": "do you remember?"}, "kept-1", token
        )
        assert second["status"] == "completed"
        assert "turn 2 of our conversation" in second["output_text"]

        # An idle connection is kept past the 5 s clients keep theirs (httpx): a server that
        # closed it then would race the client's next request, which would read a reset.
        host, port = urllib.parse.urlsplit(api).hostname, urllib.parse.urlsplit(api).port
        conn = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=10)
        try:
            statuses = []
            for pause in (6, 0):
                conn.request("GET", "/healthz")  # on a closed connection: RemoteDisconnected
                with conn.getresponse() as resp:
                    statuses.append(resp.status)
                    resp.read()
                time.sleep(pause)
            assert statuses == [200, 200]
        finally:
            conn.close()
    finally:
        _stop(proc)
    assert proc.returncode == 0

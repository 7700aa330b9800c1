"""The load test through locust, for those who prefer its web UI and its reports.

    pip install 'agentlog[load]'
    agentlog up   # in another terminal; with AGENTLOG_OFFLINE_MODEL_LATENCY_MS=1000 to mimic a model
    locust -f bench/locustfile.py --headless --users 100 --spawn-rate 100 --run-time 2m

Each user creates a session and posts its turns one after another with `?wait=`; after
AGENTLOG_LOAD_TURNS turns (2) it starts a new session. A turn that does not complete is a
failure. The api and token come from AGENTLOG_API_URL / AGENTLOG_API_TOKEN or from
.agentlog/stack.json (`--host` overrides the url); AGENTLOG_LOAD_MODEL names the sessions'
model (agentlog-offline-1). Locust measures POST to answer; `agentlog bench load` also measures
time to first event, tokens and cost. Never run as a test.
"""

from __future__ import annotations

import os
import uuid

from locust import HttpUser, constant, task

from agentlog.client import locate
from eventstore.models import OFFLINE_MODEL

STACK = locate()
TURNS = int(os.environ.get("AGENTLOG_LOAD_TURNS", "2"))
MODEL = os.environ.get("AGENTLOG_LOAD_MODEL", OFFLINE_MODEL)
WAIT_S = float(os.environ.get("AGENTLOG_LOAD_WAIT_S", "120"))


class SessionUser(HttpUser):
    """One conversation at a time: a session, then its turns, then the next session."""

    host = STACK.api_url
    wait_time = constant(0)
    network_timeout = WAIT_S + 30
    connection_timeout = 10.0

    def on_start(self) -> None:
        if STACK.api_token:
            self.client.headers["Authorization"] = f"Bearer {STACK.api_token}"
        self.session_id: str | None = None
        self.turn = 0

    def _new_session(self) -> None:
        sid = f"locust-{uuid.uuid4().hex[:12]}"
        with self.client.post(
            "/v1/sessions", json={"session_id": sid, "model": MODEL}, name="/v1/sessions", catch_response=True
        ) as resp:
            if resp.status_code != 201:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
        self.session_id, self.turn = sid, 0

    @task
    def post_turn(self) -> None:
        if self.session_id is None or self.turn >= TURNS:
            self._new_session()
            if self.session_id is None:
                return
        self.turn += 1
        key = f"{self.session_id}-turn-{self.turn}"
        with self.client.post(
            f"/v1/sessions/{self.session_id}/messages",
            params={"wait": WAIT_S},
            headers={"Idempotency-Key": key},
            json={"content": f"Hello from locust, turn {self.turn}."},
            name="/v1/sessions/[id]/messages?wait",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            elif resp.json().get("status") != "completed":
                resp.failure(f"turn {resp.json().get('status')}: {resp.json().get('error')}")

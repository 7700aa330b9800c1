"""The projection derived from the fold writes the rows the SQL projection wrote before it.

`projection_oracle.json` holds the rows of the projection as it was (each event's rules in SQL,
`rows.apply_op`), snapshotted over recorded sessions: tool turns, approvals granted and
denied, sub-agents, timers and expiry, compaction, every turn policy, redeliveries, another
tenant's start and message, a fork, a deletion and an event after it. The rows made now from
the same log, in batches of any size, must be those rows. And a session never started gets
no row at all: its events are refused with a reason.

Written again once since (AGENTLOG_WRITE_ORACLE=1), on purpose and checked row by row: the
start and the message another tenant forged for a session are now refused by the projection
as by every consumer (issue 17), so that session has no forged queued turn and its later
events two sequence numbers less; and `session_started` rows carry the two settings issue 16
added; and again for schema version 2 (every event row's `schema_version`, and `ttl_s` in
`session_expired`). Nothing else moved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from eventstore import codec, ids, projection, store
from eventstore import events as ev
from eventstore.models import OFFLINE_MODEL
from eventstore.state import empty
from tests.services import TABLES, create_database
from tests.unit.test_fold import T0
from tests.unit.test_fold_reference import simulate

pytestmark = pytest.mark.services

ORACLE = Path(__file__).with_name("projection_oracle.json")
EPOCH = "epoch-1"

# (session, script, policy, tools needing approval, verdicts, context window)
SCRIPTS: list[tuple[str, list[str], str, tuple[str, ...], list[bool], int | None]] = [
    (
        "plain",
        ["user", "react", "model", "react", "user", "react", "model", "react"],
        "enqueue",
        (),
        [],
        None,
    ),
    ("tools", ["user+tools", "user+tools", "tick"], "enqueue", (), [], None),
    ("approved", ["user+tools", "react", "model", "react", "approve"], "enqueue", ("Echo",), [True], None),
    (
        "denied",
        ["user+tools", "react", "model", "react", "deny", "user"],
        "enqueue",
        ("Echo",),
        [False],
        None,
    ),
    (
        "tasks",
        ["user+task", "react", "model", "react", "subagent", "user+task", "tick"],
        "enqueue",
        (),
        [],
        None,
    ),
    ("interrupt", ["user+tools", "react", "model", "user", "react", "user"], "interrupt", (), [], None),
    ("reject", ["user+tools", "user", "react", "user", "model"], "reject", (), [], None),
    ("compact", ["user+tools"] * 6, "enqueue", (), [], 1024),
    ("expires", ["user"], "enqueue", (), [], None),
    (
        "timeouts",
        ["user+tools", "react", "model", "react", "tick", "react", "tool", "user+task", "tick"],
        "enqueue",
        (),
        [],
        None,
    ),
]


def _simulated(
    sid: str, script: list[str], policy: str, asks: tuple[str, ...], verdicts: list[bool], window: int | None
) -> list[ev.Event]:
    """test_fold_reference.simulate, for a session of this id."""
    return simulate(script, policy, asks, verdicts, window, sid=sid)


def recorded() -> list[ev.Event]:
    """The recorded sessions as one log holds them: interleaved, with copies and intruders."""
    sessions = [_simulated(*script) for script in SCRIPTS]
    expired = ev.SessionExpired(
        event_id=ids.derive("expired/expires"),
        session_id="expires",
        occurred_at=T0.replace(hour=5),
        payload=ev.SessionExpiredPayload(idle_s=3600, ttl_s=None),
    )
    sessions[8] += [
        expired,
        ev.user_message("expires", text="too late", idempotency_key="k9", at=T0.replace(hour=6)),
    ]
    plain = sessions[0]
    history = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    history.append({"role": "assistant", "content": [{"type": "text", "text": "hello"}]})
    fork = ev.session_started(
        "fork", model=OFFLINE_MODEL, at=T0, history=history, forked_from="plain", forked_at_seq=4
    )
    sessions.append([fork, ev.user_message("fork", text="and then?", idempotency_key="f1", at=T0)])
    intruder_start = ev.session_started("tools", model="other", tenant_id="intruder", at=T0)
    intruders: list[ev.Event] = [
        intruder_start.model_copy(update={"event_id": ids.derive("forged/start")}),
        ev.user_message("tools", text="mine", idempotency_key="forged", tenant_id="intruder", at=T0),
    ]
    gone = ev.SessionDeleted(event_id=ids.derive("deleted/denied"), session_id="denied", occurred_at=T0)
    late = ev.user_message("denied", text="after the deletion", idempotency_key="late", at=T0)
    log: list[ev.Event] = []
    for i in range(max(len(s) for s in sessions)):
        log += [s[i] for s in sessions if i < len(s)]
        if i == 5:
            log += intruders + plain[:3]  # redelivered copies
    return [*log, gone, late]


def _incoming(events: list[ev.Event]) -> list[store.Incoming]:
    out = []
    for offset, event in enumerate(events):
        key, value, headers = codec.encode(event)
        out.append(store.Incoming(offset, key, value, headers, codec.decode(value, headers)))
    return out


def _plain(value: Any) -> Any:
    """A row's value as JSON keeps it (the oracle's form)."""
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    return str(value)


async def _rows(conn: store.AsyncConn) -> dict[str, list[list[Any]]]:
    rows = {}
    for name, query in TABLES.items():
        cur = await conn.execute(query.encode())
        rows[name] = [[_plain(v) for v in row] for row in await cur.fetchall()]
    return json.loads(json.dumps(rows))  # type: ignore[no-any-return]


async def _project(server: str, records: list[store.Incoming], size: int) -> dict[str, list[list[Any]]]:
    url = create_database(server)
    await store.migrate(url)
    async with await store.connect(url) as conn:
        for start in range(0, len(records), size):
            await store.apply_batch(conn, "projector", EPOCH, "t", 0, records[start : start + size])
        return await _rows(conn)


async def test_the_projection_of_recorded_sessions_is_the_oracle(pg_server: str) -> None:
    records = _incoming(recorded())
    whole = await _project(pg_server, records, len(records))
    if os.environ.get("AGENTLOG_WRITE_ORACLE"):
        ORACLE.write_text(json.dumps(whole, indent=1, sort_keys=True) + "\n")
    oracle = json.loads(ORACLE.read_text())
    assert {name: len(rows) for name, rows in whole.items()} == {
        name: len(rows) for name, rows in oracle.items()
    }
    for name in oracle:
        assert whole[name] == oracle[name], name
    assert await _project(pg_server, records, 37) == oracle


async def test_a_session_never_started_gets_no_row(pg_server: str) -> None:
    ghost: list[ev.Event] = [
        ev.user_message("ghost", text="hello?", idempotency_key="k", at=T0),
        ev.TurnStarted(event_id=ids.derive("ghost/turn"), session_id="ghost", turn_id="t", occurred_at=T0),
    ]
    assert projection.refusal(empty("ghost"), ghost[0]) is not None
    records = _incoming([*ghost, ev.session_started("real", model=OFFLINE_MODEL, at=T0)])
    url = create_database(pg_server)
    await store.migrate(url)
    async with await store.connect(url) as conn:
        result = await store.apply_batch(conn, "projector", EPOCH, "t", 0, records)
        one = await store.project_event(conn, ghost[0], EPOCH, 0, 9)
        rows = await _rows(conn)
        cur = await conn.execute("SELECT log_offset, reason FROM dead_letters ORDER BY log_offset")
        dead = await cur.fetchall()
    assert (result.applied, result.dead_letters, one) == (1, 2, False)
    assert [r[0] for r in rows["sessions"]] == ["real"]
    assert {r[0]["session_id"] for r in rows["events"]} == {"real"}
    assert rows["turns"] == rows["messages"] == []
    assert [offset for offset, _ in dead] == [0, 1]
    assert all("never started" in reason for _, reason in dead)

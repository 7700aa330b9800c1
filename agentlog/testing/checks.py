"""Exactly once, checked in SQL and on disk after a fault: the checks the fault tests assert and
`bench.chaos` counts. A load's turns are told apart by their sessions' prefix; each carries a
Bash append (a `write`: never run twice) whose line in the workspace says how often it ran.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

FINAL = ("completed", "failed")


def turn_content(session_id: str, n: int, subagent: bool = False) -> str:
    """Turn `n` of a session: a Bash append of its key `session-n` (and a sub-agent, if asked)."""
    lines = ["call Bash " + json.dumps({"command": f"echo {session_id}-{n} >> appends.txt"})]
    if subagent:
        lines.append("call Task " + json.dumps({"description": "echo", "prompt": f"Say {session_id} {n}."}))
    return "\n".join(lines)


def sql(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query, on a connection of its own."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return list(conn.execute(query.encode() if not params else query, params or None).fetchall())


def ended(database_url: str, prefix: str, posted: int) -> bool:
    """Whether `posted` turns of the prefix's sessions are in a final state."""
    rows = sql(
        database_url,
        "SELECT count(*) FROM turns WHERE session_id LIKE %s AND status IN ('completed', 'failed')",
        prefix + "%",
    )
    return bool(rows[0][0] >= posted)


@dataclass
class Verdict:
    """What the checks found for the turns posted under one prefix (each list names the keys,
    steps or calls concerned); `failed` turns were answered, with `turn_failed`."""

    posted: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)

    def clean(self) -> bool:
        """Nothing lost, stuck, doubled or unanswered."""
        return not (self.lost or self.stuck or self.doubled or self.unanswered)


def check(database_url: str, workspaces: Path, prefix: str, posted: list[tuple[str, str]]) -> Verdict:
    """The turns posted as (session, idempotency key) under `prefix`, and their sub-agents."""
    like = prefix + "%"
    # The prefix's sessions and their sub-agents' children.
    mine = (
        "{0} LIKE %(like)s OR {0} IN (SELECT session_id FROM sessions WHERE parent_session_id LIKE %(like)s)"
    )
    verdict = Verdict(posted=len(posted))
    turns = sql(
        database_url, "SELECT session_id, idempotency_key, status FROM turns WHERE session_id LIKE %s", like
    )
    rows = Counter((sid, key) for sid, key, _ in turns)
    status = {(sid, key): st for sid, key, st in turns}
    for sid, key in posted:
        if rows[(sid, key)] == 0:
            verdict.lost.append(key)
        elif status[(sid, key)] not in FINAL:
            verdict.stuck.append(f"{key} {status[(sid, key)]}")
        elif status[(sid, key)] == "failed":
            verdict.failed.append(key)
    verdict.doubled += [f"{key}: {n} turns" for (_, key), n in rows.items() if n > 1]
    with psycopg.connect(database_url, autocommit=True) as conn:

        def q(query: str) -> list[tuple[Any, ...]]:
            return list(
                conn.execute(
                    query.replace("MINE", mine.format("session_id"))
                    .replace("CALLS", mine.format("c.session_id"))
                    .encode(),
                    {"like": like},
                ).fetchall()
            )

        # One answer per step, one result per tool call, one completion per sub-agent call.
        for kind, key in (
            ("assistant_message", "step::text"),
            ("tool_result", "payload->>'tool_use_id'"),
            ("subagent_completed", "(payload->>'tool_use_id') || '#' || (payload->>'attempt')"),
        ):
            verdict.doubled += [
                f"{kind} {sid} {turn} {what} ×{n}"
                for sid, turn, what, n in q(
                    f"SELECT session_id, turn_id, {key}, count(*) FROM events WHERE type = '{kind}'"
                    " AND (MINE) GROUP BY 1, 2, 3 HAVING count(*) > 1"
                )
            ]
        calls = q(
            "SELECT c.session_id, c.tool_use_id, c.name, c.status, c.input->>'command',"
            " t.status IN ('completed', 'failed') FROM tool_calls c LEFT JOIN turns t USING (turn_id)"
            " WHERE CALLS"
        )
    # A finished turn left no call unanswered.
    verdict.unanswered += [
        f"{sid} {use} {name} {st}"
        for sid, use, name, st, _, over in calls
        if over and st not in ("ok", "error")
    ]
    _appends(verdict, workspaces, prefix, calls)
    return verdict


def _appends(verdict: Verdict, workspaces: Path, prefix: str, calls: list[tuple[Any, ...]]) -> None:
    """Each Bash append ran as often as it was answered ok: once, or (an unknown outcome, an
    error) at most once."""
    ran: Counter[str] = Counter()
    for path in workspaces.rglob("appends.txt"):
        ran.update(line for line in path.read_text().split() if line.startswith(prefix))
    ok: Counter[str] = Counter()
    answered: set[str] = set()
    for _, _, name, st, command, _ in calls:
        if name == "Bash" and command and command.startswith("echo "):
            key = command.split()[1]
            answered.add(key)
            ok[key] += st == "ok"
    for key in sorted(set(ran) | answered):
        if ran[key] > max(ok[key], 1):
            verdict.doubled.append(f"{key}: appended {ran[key]}×, answered ok {ok[key]}×")
        elif ran[key] < ok[key]:
            verdict.lost.append(f"{key}: answered ok {ok[key]}×, appended {ran[key]}×")

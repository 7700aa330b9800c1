"""Which events the log's readers take: the writers checked by the readers (issue 17).

An event for a session nobody started, or under another tenant than its session's, would
start work or write rows on nobody's behalf: every consumer refuses it alike (it is
dead-lettered with the reason), so it makes no turn, no model call and no row. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

from eventstore.events import Event, SessionDeleted, SessionStarted
from eventstore.state import SessionState, empty, evolve


def refusal(state: SessionState, event: Event) -> str | None:
    """Why `event` is refused by a consumer whose fold of its session is `state`, or None."""
    if state.status == "new":
        # A deletion is taken even so: a reader that passed over a shredded session's records
        # (or came after its rows were gone) still has its tombstone to keep.
        return None if isinstance(event, SessionStarted | SessionDeleted) else _never_started(event)
    return _owner_refusal(state.tenant_id, event)


def admitted(session_id: str, events: Iterable[Event]) -> list[Event]:
    """The events of a session that its consumers take, in order (a replay of the log folds these)."""
    state, kept = empty(session_id), []
    for event in events:
        if refusal(state, event) is None:
            kept.append(event)
            state = evolve(state, event)
    return kept


def _never_started(event: Event) -> str:
    return f"refused: {event.type} for session {event.session_id!r}, which was never started"


def _owner_refusal(tenant: str, event: Event) -> str | None:
    if event.tenant_id == tenant:
        return None
    return (
        f"refused: {event.type} of tenant {event.tenant_id!r} for session {event.session_id!r},"
        f" which tenant {tenant!r} owns"
    )

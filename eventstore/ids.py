"""Deterministic identifiers: every id is derived from its cause, never drawn at random."""

from __future__ import annotations

import uuid

# Fixed namespace: changing it would change every event id ever derived.
NAMESPACE = uuid.UUID("6f1c2d3e-4a5b-5c6d-8e7f-0a1b2c3d4e5f")


def derive(key: str) -> uuid.UUID:
    """The UUID v5 of an idempotency key."""
    return uuid.uuid5(NAMESPACE, key)


def turn_id_for(session_id: str, idempotency_key: str) -> str:
    """The turn a user message starts, derived from the client's idempotency key."""
    return str(derive(f"{session_id}/turn/{idempotency_key}"))


def event_key(session_id: str, *parts: object) -> str:
    """The idempotency key of an event caused inside a session: session/turn/step/kind/index."""
    return "/".join([session_id, *(str(p) for p in parts)])

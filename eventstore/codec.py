"""The one owner of wire formats: event <-> bytes and headers, topic names, partition keys.

Old events are upcast here, by `schema_version`, before they reach the model types.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pydantic

from eventstore.errors import DecodeError
from eventstore.events import EVENT_ADAPTER, SCHEMA_VERSION, Event

EVENTS_TOPIC = "agentlog.events"
DEAD_LETTER_TOPIC = "agentlog.events.dlq"
CONTENT_TYPE = b"application/json"
# The first record of a topic's partition 0: the topic's identity (a topic deleted and made
# again is a new log). Not an event: every reader skips it.
MARKER_TYPE = b"application/vnd.agentlog.log-marker"
MARKER_KEY = b"agentlog/log-marker"

Headers = list[tuple[str, bytes]]


def _v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 2 states the TTL a session expired under; a version 1 expiry did not say."""
    if raw.get("type") == "session_expired" and isinstance(raw.get("payload"), dict):
        raw = {**raw, "payload": {"ttl_s": None, **raw["payload"]}}
    return raw


# version -> function taking a raw dict of that version and returning the next version.
UPCASTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


_UNTRACED = {"traceparent"}


def key_for(session_id: str) -> bytes:
    """The partition key: all of a session's events share one partition."""
    return session_id.encode()


def encode(event: Event) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of one event."""
    # An untraced event has no `traceparent` key: its bytes are those older readers know.
    value = event.__pydantic_serializer__.to_json(
        event, exclude=_UNTRACED if event.traceparent is None else None
    )
    headers: Headers = [
        ("content-type", CONTENT_TYPE),
        ("event-type", event.type.encode()),
        ("event-id", str(event.event_id).encode()),
        ("schema-version", str(event.schema_version).encode()),
    ]
    if event.traceparent is not None:
        headers.append(("traceparent", event.traceparent.encode()))
    return key_for(event.session_id), value, headers


def marker(identity: str) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of a log's identity marker."""
    return MARKER_KEY, identity.encode(), [("content-type", MARKER_TYPE)]


def is_marker(headers: Sequence[tuple[str, bytes]]) -> bool:
    """Whether a record is a log's identity marker (not an event)."""
    return dict(headers).get("content-type") == MARKER_TYPE


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    """Bring a raw event dict up to the current schema version."""
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version < 1 or version > SCHEMA_VERSION:
        raise DecodeError(f"unsupported schema_version {version!r}")
    while version < SCHEMA_VERSION:
        raw = UPCASTERS[version](raw)
        version += 1
        raw["schema_version"] = version
    return raw


def from_dict(raw: Any) -> Event:
    """An event from its JSON-ready dict (as stored in Postgres), upcast first."""
    if not isinstance(raw, dict):
        raise DecodeError(f"an event is a JSON object, got {type(raw).__name__}")
    try:
        return EVENT_ADAPTER.validate_python(upcast(raw))
    except pydantic.ValidationError as exc:
        raise DecodeError(_explain(exc)) from exc


def decode(value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> Event:
    """An event from record bytes; anything unreadable raises DecodeError."""
    if value is None:
        raise DecodeError("empty record value (tombstone)")
    ctype = dict(headers).get("content-type", CONTENT_TYPE)
    if ctype != CONTENT_TYPE:
        raise DecodeError(f"unsupported content-type {ctype!r}")
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    return from_dict(raw)


def _explain(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)

"""The one owner of wire formats: event <-> bytes and headers, topic names, partition keys.

Old events are upcast here, by `schema_version`, before they reach the model types. A record
is plain JSON, sealed (AES-256-GCM with its session's data key, the event id and session as
associated data), or a reference to bytes kept in Postgres; the headers and the key stay in
clear either way. Records without those content types (older logs) decode as plain JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import pydantic
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventstore.errors import DecodeError
from eventstore.events import EVENT_ADAPTER, SCHEMA_VERSION, Event

EVENTS_TOPIC = "agentlog.events"
DEAD_LETTER_TOPIC = "agentlog.events.dlq"
CONTENT_TYPE = b"application/json"
# The first record of a topic's partition 0: the topic's identity (a topic deleted and made
# again is a new log). Not an event: every reader skips it.
MARKER_TYPE = b"application/vnd.agentlog.log-marker"
MARKER_KEY = b"agentlog/log-marker"
# An event's JSON sealed with its session's data key: a 12-byte nonce, then AES-GCM's output.
SEALED_TYPE = b"application/vnd.agentlog.sealed"
# An event kept in Postgres (payload_blobs) because its record is over the log's limit:
# {"sha256", "size"} here; the content type of the kept bytes in `payload-type`.
REFERENCE_TYPE = b"application/vnd.agentlog.reference+json"
NONCE_BYTES = 12

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


def content_type(headers: Sequence[tuple[str, bytes]]) -> bytes:
    """The record's content type (plain JSON when the header is absent: the oldest records)."""
    return dict(headers).get("content-type", CONTENT_TYPE)


def _associated(headers: Sequence[tuple[str, bytes]], key: bytes | None) -> bytes:
    """What a sealed value is bound to: its event id and session, so it cannot be moved."""
    return dict(headers).get("event-id", b"") + b"\x00" + (key or b"")


def seal(record: tuple[bytes, bytes, Headers], aead: AESGCM) -> tuple[bytes, bytes, Headers]:
    """The record with its value sealed by the session's data key (headers stay in clear)."""
    key, value, headers = record
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + aead.encrypt(nonce, value, _associated(headers, key))
    return key, sealed, _typed(SEALED_TYPE, headers)


def unseal(key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]], aead: AESGCM) -> bytes:
    """The plain JSON of a sealed value; DecodeError if the key or the bytes are not its own."""
    try:
        return aead.decrypt(value[:NONCE_BYTES], value[NONCE_BYTES:], _associated(headers, key))
    except InvalidTag as exc:
        raise DecodeError("sealed record does not open with its session's key") from exc


def reference(record: tuple[bytes, bytes, Headers], sha256: str) -> tuple[bytes, bytes, Headers]:
    """A small record standing for `record`, whose value is kept by its sha256 elsewhere."""
    key, value, headers = record
    body = json.dumps({"sha256": sha256, "size": len(value)}).encode()
    kept = content_type(headers)
    return key, body, _typed(REFERENCE_TYPE, [("payload-type", kept), *headers])


def referenced(value: bytes | None) -> tuple[str, int]:
    """(sha256, size) of a reference record's value."""
    try:
        raw = json.loads(value or b"")
        sha, size = raw["sha256"], raw["size"]
    except (ValueError, TypeError, KeyError) as exc:
        raise DecodeError(f"malformed payload reference: {exc}") from exc
    if not isinstance(sha, str) or len(sha) != 64 or not isinstance(size, int):
        raise DecodeError("malformed payload reference")
    return sha, size


def dereferenced(headers: Sequence[tuple[str, bytes]]) -> Headers:
    """The headers of the record a reference stands for."""
    kept = dict(headers).get("payload-type", CONTENT_TYPE)
    return _typed(kept, [(k, v) for k, v in headers if k != "payload-type"])


def _typed(ctype: bytes, headers: Sequence[tuple[str, bytes]]) -> Headers:
    """`headers` with the content type replaced by `ctype`, first."""
    return [("content-type", ctype), *((k, v) for k, v in headers if k != "content-type")]


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


def decode(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] = (),
    aead: AESGCM | None = None,
    key: bytes | None = None,
) -> Event:
    """An event from record bytes (a sealed one opened with `aead`, its session's data key,
    and the record's `key`); anything unreadable raises DecodeError."""
    if value is None:
        raise DecodeError("empty record value (tombstone)")
    named = dict(headers)
    ctype = named.get("content-type", CONTENT_TYPE)
    if ctype == SEALED_TYPE:
        if aead is None:
            raise DecodeError("sealed record, and no data key to open it (is a master key set?)")
        value, ctype = unseal(key, value, headers, aead), CONTENT_TYPE
    if ctype != CONTENT_TYPE:
        raise DecodeError(f"unsupported content-type {ctype!r}")
    # Records say their version in a header: only an older one needs the dict to upcast.
    if named.get("schema-version", _CURRENT) == _CURRENT:
        event = from_json(value)
        if event is not None:
            return event
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    return from_dict(raw)


_CURRENT = str(SCHEMA_VERSION).encode()


def from_json(value: bytes | str) -> Event | None:
    """An event of the current schema version parsed and validated from its JSON in one pass
    (no dict in between: half the cost of `json.loads` and `from_dict`); None if the JSON is
    not that (an older version, which must be upcast, or bad input), so that the caller takes
    the slow path, which upcasts or says what is wrong."""
    try:
        # The adapter's core validator itself: its Python wrapper was a tenth of the cost.
        event: Event = EVENT_ADAPTER.validator.validate_json(value)
    except pydantic.ValidationError:
        return None
    # A body without a version is a version 1 one; the model's default would hide that.
    if event.schema_version != SCHEMA_VERSION or "schema_version" not in event.model_fields_set:
        return None
    return event


def _explain(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)

"""Sealed records (eventstore/codec.py): an event sealed with its session's data key opens with
that key only, bound to its event id and session; plain records of older logs still decode."""

from __future__ import annotations

import json
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from eventstore import codec
from eventstore import events as ev
from eventstore.errors import DecodeError
from eventstore.log import KafkaLog
from eventstore.settings import Settings

MARKER = "plaintext-marker-2f9c"

# A user_message as the log held it before sealing existed: it must decode forever.
GOLDEN = (
    b'{"event_id":"6f1c2a8e-55a4-5d3e-9a57-0c7e2d1b9f10","session_id":"golden","tenant_id":"default",'
    b'"type":"user_message","turn_id":"t-1","step":0,"causation_id":null,"correlation_id":"t-1",'
    b'"occurred_at":"2026-12-01T10:00:00Z","schema_version":1,'
    b'"payload":{"content":[{"type":"text","text":"hello from an old log"}],"idempotency_key":"k-1"}}'
)


def user_message(session_id: str = "s-1", text: str = MARKER) -> ev.Event:
    return ev.user_message(session_id, text=text, idempotency_key="k-1")


def test_a_sealed_record_hides_its_payload_and_opens_with_its_key() -> None:
    event = user_message()
    aead = AESGCM(AESGCM.generate_key(256))
    key, value, headers = codec.seal(codec.encode(event), aead)
    assert MARKER.encode() not in value and codec.content_type(headers) == codec.SEALED_TYPE
    # What routing needs stays in clear: the key (session) and the type and id headers.
    assert key == b"s-1" and dict(headers)["event-type"] == b"user_message"
    assert codec.decode(value, headers, aead, key) == event


def test_a_sealed_record_does_not_open_with_another_key_nor_moved_to_another_event() -> None:
    aead = AESGCM(AESGCM.generate_key(256))
    key, value, headers = codec.seal(codec.encode(user_message()), aead)
    with pytest.raises(DecodeError, match="does not open"):
        codec.decode(value, headers, AESGCM(AESGCM.generate_key(256)), key)
    moved = [(k, str(uuid.uuid4()).encode() if k == "event-id" else v) for k, v in headers]
    with pytest.raises(DecodeError, match="does not open"):
        codec.decode(value, moved, aead, key)
    with pytest.raises(DecodeError, match="does not open"):
        codec.decode(value, headers, aead, b"another-session")
    with pytest.raises(DecodeError, match="no data key"):
        codec.decode(value, headers)


def test_a_plain_record_of_an_older_log_decodes() -> None:
    event = codec.decode(GOLDEN, [("content-type", b"application/json"), ("event-type", b"user_message")])
    assert isinstance(event, ev.UserMessage)
    assert event.payload.content == [{"type": "text", "text": "hello from an old log"}]
    assert codec.decode(GOLDEN) == event  # the oldest records had no headers at all


def test_a_reference_stands_for_its_record() -> None:
    record = codec.encode(user_message())
    _, value, headers = codec.reference(record, "ab" * 32)
    assert codec.content_type(headers) == codec.REFERENCE_TYPE
    assert codec.referenced(value) == ("ab" * 32, len(record[1]))
    assert codec.dereferenced(headers) == record[2]
    with pytest.raises(DecodeError, match="malformed"):
        codec.referenced(json.dumps({"sha256": "short", "size": 1}).encode())


def test_a_master_key_must_be_32_bytes_of_base64_and_is_never_echoed() -> None:
    for wrong in ("not base64!", "c2hvcnQ="):
        with pytest.raises(ValidationError) as caught:
            Settings(master_key=wrong)
        assert "master key" in str(caught.value) and wrong not in str(caught.value)


async def test_the_log_adapter_decodes_a_plain_record_without_a_database() -> None:
    # The vault is asked only about sealed or referenced records: plain ones need no Postgres
    # (this database URL answers nothing).
    log = KafkaLog(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    try:
        event = await log.records.decode(b"golden", GOLDEN, [("content-type", codec.CONTENT_TYPE)])
    finally:
        await log.stop()
    assert event.session_id == "golden"

"""Boundaries that must not drift: import direction, aiokafka's defaults, the codec's errors."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from eventstore import codec
from eventstore import events as ev
from eventstore.errors import DecodeError
from eventstore.log import consumer_config, producer_config
from eventstore.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_imports_go_one_way() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_unsafe_kafka_defaults_are_overridden() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    producer = producer_config(settings)
    assert producer["acks"] == "all"
    assert producer["enable_idempotence"] is False  # Tansu refuses it; real Kafka sets it on
    assert producer["max_request_size"] == settings.kafka_max_request_size
    assert producer_config(Settings(kafka_idempotence=True))["enable_idempotence"] is True
    consumer = consumer_config(settings)
    assert consumer["enable_auto_commit"] is False
    assert consumer["auto_offset_reset"] == "earliest"
    assert consumer["fetch_max_wait_ms"] == settings.kafka_fetch_max_wait_ms


def test_codec_round_trip_and_deterministic_ids() -> None:
    event = ev.user_message("s1", text="hi", idempotency_key="key-1")
    key, value, headers = codec.encode(event)
    assert key == b"s1"
    assert dict(headers)["event-type"] == b"user_message"
    assert codec.decode(value, headers) == event
    again = ev.user_message("s1", text="hi", idempotency_key="key-1")
    assert again.event_id == event.event_id and again.turn_id == event.turn_id
    assert ev.user_message("s1", text="hi", idempotency_key="key-2").event_id != event.event_id
    assert isinstance(event.event_id, uuid.UUID) and event.event_id.version == 5


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\xff\xfe garbage", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"type": "no_such_type", "session_id": "s"}', "invalid event"),
        (b'{"type": "user_message", "schema_version": 99}', "schema_version"),
        (None, "tombstone"),
    ],
)
def test_undecodable_bytes_raise_one_error(value: bytes | None, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        codec.decode(value)

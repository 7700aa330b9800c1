"""Records decoded from their bytes in one pass (`codec.from_json`) give exactly the events the
dict path gives (`json.loads`, the upcasters, `from_dict`), and anything that is not an event of
the current version, or says so only in its header, still goes through the upcasters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eventstore import codec
from eventstore import events as ev
from tests.golden import replay

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v1.jsonl"


def _body(event: ev.Event) -> dict[str, Any]:
    return dict(json.loads(codec.encode(event)[1]))


def test_every_golden_event_decodes_from_its_bytes_as_through_a_dict() -> None:
    records = [r for r in replay.load(GOLDEN) if not codec.is_marker(replay.headers(r))]
    events = replay.events(records)
    assert len({e.type for e in events}) >= 10  # the golden log covers most kinds
    for event in events:
        _, value, headers = codec.encode(event)
        fast = codec.from_json(value)
        assert fast is not None and fast == event == codec.from_dict(json.loads(value)), event.type
        assert codec.decode(value, headers) == event


@pytest.fixture
def marked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A version 1 -> 2 upcaster that leaves a mark on user messages."""
    original = codec.UPCASTERS[1]

    def mark(raw: dict[str, Any]) -> dict[str, Any]:
        raw = original(raw)
        if raw.get("type") == "user_message":
            raw["payload"] = {**raw["payload"], "idempotency_key": "upcast"}
        return raw

    monkeypatch.setitem(codec.UPCASTERS, 1, mark)


@pytest.mark.usefixtures("marked")
@pytest.mark.parametrize("version", [None, 1], ids=["no version in the body", "version 1 in the body"])
def test_an_older_body_is_upcast_whatever_its_header_says(version: int | None) -> None:
    body = _body(ev.user_message("s", text="hi", idempotency_key="k"))
    del body["schema_version"]
    if version is not None:
        body["schema_version"] = version
    value = json.dumps(body).encode()
    assert codec.from_json(value) is None
    for headers in ([], [("schema-version", b"2")], [("schema-version", b"1")]):
        event = codec.decode(value, headers)
        assert isinstance(event, ev.UserMessage) and event.payload.idempotency_key == "upcast", headers
        assert event.schema_version == ev.SCHEMA_VERSION

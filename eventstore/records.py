"""Events to the records the log holds, and back, with what needs Postgres: an event sealed
with its session's data key when a master key is set, kept by reference when its record is
over the log's limit (eventstore/vault.py). The bytes themselves are codec.py's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from eventstore import codec
from eventstore.errors import DecodeError, RecordTooLarge
from eventstore.events import Event, SessionDeleted
from eventstore.settings import Settings
from eventstore.vault import DESTROYED, Vault


class Records:
    """The one place events are made into records for the log and read back from them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.vault = Vault(settings)

    async def close(self) -> None:
        """Release the vault's connections."""
        await self.vault.close()

    async def encode(self, event: Event) -> tuple[bytes, bytes, codec.Headers] | None:
        """The record of an event: sealed with its session's key when encrypting (never a
        deletion: every reader must see it after the key is gone), by reference when over
        the log's limit. None when the session was deleted (its key destroyed)."""
        record = codec.encode(event)
        if self.vault.encrypting and not isinstance(event, SessionDeleted):
            aead = await self.vault.for_append(event.session_id, event.tenant_id)
            if aead == DESTROYED:
                return None
            record = codec.seal(record, aead)
        key, value, headers = record
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers))
        if size <= self.settings.kafka_max_request_size:
            return record
        limit = max(self.settings.payload_max_bytes, self.settings.kafka_max_request_size)
        if size > limit:
            raise RecordTooLarge(
                f"the {event.type} event is {size} bytes as a record, over the log's limit of {limit}"
            )
        digest = await self.vault.keep(event.session_id, codec.content_type(headers), value)
        return codec.reference(record, digest)

    async def decode(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Event:
        """The event of a record: fetched by its reference, opened with its session's key.
        DecodeError if it cannot be read; Shredded (a DecodeError) if its session was deleted."""
        ctype = codec.content_type(headers)
        if ctype == codec.REFERENCE_TYPE:
            digest, size = codec.referenced(value)
            value = await self.vault.kept(_session(key), digest, size)
            headers = codec.dereferenced(headers)
            ctype = codec.content_type(headers)
        aead = await self.vault.for_reading(_session(key)) if ctype == codec.SEALED_TYPE else None
        event = codec.decode(value, headers, aead, key)
        if aead is not None and event.session_id != _session(key):
            raise DecodeError(f"sealed event of session {event.session_id} under key {_session(key)}")
        if isinstance(event, SessionDeleted):
            self.vault.forget(event.session_id)
        return event

    async def prefetch(self, records: Sequence[Any]) -> None:
        """Look up at once the keys of the sessions whose sealed records are in a batch."""
        await self.vault.prefetch(
            _session(r.key)
            for r in records
            if codec.content_type(r.headers) in (codec.SEALED_TYPE, codec.REFERENCE_TYPE)
        )


def _session(key: bytes | None) -> str:
    """The session a record belongs to: its partition key."""
    if not key:
        raise DecodeError("a record without a key belongs to no session")
    return key.decode("utf-8", "replace")

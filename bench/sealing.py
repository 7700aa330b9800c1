"""The cost of sealing each session's records (eventstore/vault.py) for bench.parts: encode and
decode per event in clear and sealed, and the Postgres round trips a session's key costs;
beside them what decoding a record costs from its bytes and through a dict."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.measure import Row
from eventstore import codec, vault
from eventstore import events as ev
from eventstore.records import Records
from tests.services import Stack

PART = "sealing"


def sample(count: int, sessions: int = 100) -> list[ev.Event]:
    """Tool results of about 1 KB across `sessions` sessions: the common large event."""
    return [
        ev.tool_result(
            f"seal-{i % sessions}",
            turn_id=f"t-{i}",
            step=1,
            tool_use_id=f"toolu_{i}",
            content="line of tool output " * 50,
            is_error=False,
            tenant_id="default",
        )
        for i in range(count)
    ]


def _per_event_us(events: list[ev.Event], roundtrip: Callable[[ev.Event], object]) -> float:
    started = time.perf_counter()
    for event in events:
        roundtrip(event)
    return (time.perf_counter() - started) / len(events) * 1e6


def decoding(events: list[ev.Event], rounds: int = 3) -> list[Row]:
    """µs of CPU per record decoded from its bytes in one pass (`codec.decode`) beside the dict
    path it replaced (`json.loads`, then `codec.from_dict`), the two taking turns; the best of
    `rounds` each, so that a busy machine disturbs both alike."""
    records = [codec.encode(event)[1:] for event in events]

    def cpu_us(decode: Callable[[bytes, codec.Headers], object]) -> float:
        started = time.process_time()
        for value, headers in records:
            decode(value, headers)
        return (time.process_time() - started) / len(records) * 1e6

    best = {"bytes": float("inf"), "dict": float("inf")}
    for _ in range(rounds):
        best["dict"] = min(best["dict"], cpu_us(lambda value, _: codec.from_dict(json.loads(value))))
        best["bytes"] = min(best["bytes"], cpu_us(codec.decode))
    size = f"{len(records[0][0])} B tool results, CPU time"
    return [
        Row("decode", "from bytes (validate_json)", best["bytes"], "µs/event", size),
        Row("decode", "through a dict (json.loads)", best["dict"], "µs/event", "the path before"),
    ]


async def sealing(stack: Stack, count: int) -> list[Row]:
    """Per-event encode+decode in clear and sealed (pure CPU, key cached), through Records
    (the vault's cache included), and a data key made and looked up (Postgres)."""
    events = sample(count)
    aead = AESGCM(AESGCM.generate_key(256))

    def plain(event: ev.Event) -> object:
        _, value, headers = codec.encode(event)
        return codec.decode(value, headers)

    def sealed(event: ev.Event) -> object:
        key, value, headers = codec.seal(codec.encode(event), aead)
        return codec.decode(value, headers, aead, key)

    plain_us = _per_event_us(events, plain)
    sealed_us = _per_event_us(events, sealed)
    settings = stack.settings.model_copy(update={"master_key": _key()})
    log = Records(settings)
    try:
        await log.vault.check()
        sessions = sorted({e.session_id for e in events})
        started = time.perf_counter()
        for sid in sessions:
            await log.vault.for_append(sid, "default")
        made_ms = (time.perf_counter() - started) / len(sessions) * 1000
        started = time.perf_counter()
        for event in events:
            record = await log.encode(event)
            assert record is not None
            await log.decode(*record)
        through_us = (time.perf_counter() - started) / len(events) * 1e6
        log.vault.cache.clear()
        started = time.perf_counter()
        for sid in sessions:
            await log.vault.prefetch([sid])
        lookup_ms = (time.perf_counter() - started) / len(sessions) * 1000
    finally:
        await log.close()
    size = f"{len(codec.encode(events[0])[1])} B tool results"
    return [
        *decoding(events),
        Row(PART, "encode+decode, in clear", plain_us, "µs/event", size),
        Row(PART, "encode+decode, sealed", sealed_us, "µs/event", "AES-256-GCM, key cached"),
        Row(PART, "added by sealing", sealed_us - plain_us, "µs/event", "pure CPU"),
        Row(PART, "Records.encode+decode, sealed", through_us, "µs/event", "the vault's cache hit"),
        Row(PART, "data key made (a new session)", made_ms, "ms", "one INSERT + SELECT"),
        Row(PART, "data key looked up (cache miss)", lookup_ms, "ms", "one SELECT, unwrapped"),
    ]


def _key() -> object:
    from eventstore.settings import Settings

    return Settings(master_key=vault.new_master_key()).master_key

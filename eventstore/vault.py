"""Session data keys and oversized payloads, in Postgres: envelope encryption and blobs.

Each session's records are sealed with a data key of its own (AES-256-GCM), made by whoever
appends the session's first record and kept in `session_keys`, wrapped by the master key
(AGENTLOG_MASTER_KEY). Any process on any machine opens a record by looking the key up and
unwrapping it; each keeps a bounded cache of unwrapped keys. Deleting a session destroys its
key (the row stays, empty, so no writer makes it a new one): its records in the log can never
be opened again. A record too large for the log is kept in `payload_blobs` by its sha256.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Literal

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import AsyncConnectionPool

from eventstore.errors import DecodeError, MasterKeyError, Shredded
from eventstore.settings import Settings

log = logging.getLogger(__name__)

DESTROYED: Literal["destroyed"] = "destroyed"
Key = AESGCM | Literal["destroyed"]
AsyncConn = psycopg.AsyncConnection[Any]


def master_key_bytes(text: str) -> bytes:
    """The 32 bytes of a master key given as base64; ValueError (never echoing it) otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a master key must be base64 (`openssl rand -base64 32`)") from None
    if len(raw) != 32:
        raise ValueError(f"a master key must be 32 bytes (AES-256), this one is {len(raw)}")
    return raw


def new_master_key() -> str:
    """A fresh master key, as base64."""
    return base64.b64encode(os.urandom(32)).decode()


def master_key_id(raw: bytes) -> str:
    """A master key's public name: a digest that tells keys apart and reveals nothing."""
    return hashlib.sha256(b"agentlog master key\x00" + raw).hexdigest()[:16]


def _wrap_context(session_id: str) -> bytes:
    return b"agentlog data key\x00" + session_id.encode()


async def destroy_key(conn: AsyncConn, session_id: str, tenant_id: str) -> None:
    """Destroy a session's data key and its kept payloads (a row is left, empty, for good).
    Only the session's own tenant can: a deletion forged for another tenant's id destroys nothing."""
    await conn.execute(
        "INSERT INTO session_keys (session_id, tenant_id, destroyed_at) VALUES (%s, %s, now())"
        " ON CONFLICT (session_id) DO UPDATE SET wrapped_key = NULL, master_key_id = NULL,"
        " destroyed_at = COALESCE(session_keys.destroyed_at, now())"
        " WHERE session_keys.tenant_id = EXCLUDED.tenant_id",
        (session_id, tenant_id),
    )
    await conn.execute("DELETE FROM payload_blobs WHERE session_id = %s", (session_id,))


class Vault:
    """Data keys (made, looked up, cached, destroyed) and payload blobs, over a small pool."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.database_url
        self.masters: dict[str, AESGCM] = {}
        self.current: str | None = None
        if settings.master_key is not None:
            raw = master_key_bytes(settings.master_key.get_secret_value())
            self.current = master_key_id(raw)
            self.masters[self.current] = AESGCM(raw)
        for old in settings.previous_master_keys:
            raw = master_key_bytes(old.get_secret_value())
            self.masters.setdefault(master_key_id(raw), AESGCM(raw))
        self.cache: OrderedDict[str, Key] = OrderedDict()
        self.cache_limit = settings.key_cache_sessions
        self._pool: AsyncConnectionPool[AsyncConn] | None = None
        self._opening = asyncio.Lock()
        self.checked = False

    @property
    def encrypting(self) -> bool:
        """Whether new records are sealed (a master key is configured)."""
        return self.current is not None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """A connection of the vault's own pool (opened on first use)."""
        async with self._opening:
            if self._pool is None:
                pool: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=4,
                    open=False,
                    timeout=5,  # as the api's pool: a lost database is an error, never a hang
                    # Checked when taken: this pool outlives a worker's pause for a restarted
                    # Postgres, and a connection to the dead server handed out then failed the
                    # resumed worker at once (bench.chaos, pg). Keys are cached: taken rarely.
                    check=AsyncConnectionPool.check_connection,
                    kwargs={"autocommit": True, "application_name": "agentlog-vault"},
                )
                try:
                    await pool.open(wait=True, timeout=5)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        async with self._pool.connection() as conn:
            yield conn

    async def close(self) -> None:
        """Close the pool, forget every key."""
        self.cache.clear()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def check(self) -> None:
        """At start: refuse a master key that did not wrap the stored data keys, so a wrong
        key is one clear error, not every record failing to open; and refuse to run without
        a master key over a log whose records are sealed (each would be a dead letter)."""
        if self.checked:
            return
        if self.current is None:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                cur = await conn.execute("SELECT key_id FROM master_keys ORDER BY key_id")
                used = [row[0] for row in await cur.fetchall()]
            if used:
                raise MasterKeyError(
                    f"records in this log are sealed (master key {', '.join(used)}), and no"
                    " AGENTLOG_MASTER_KEY is set: set it to read them"
                )
            self.checked = True
            return
        async with self.connection() as conn:
            cur = await conn.execute("SELECT key_id FROM master_keys")
            unknown = sorted({row[0] for row in await cur.fetchall()} - set(self.masters))
            if unknown:
                raise MasterKeyError(
                    f"the stored session keys were wrapped by master key {', '.join(unknown)}, and"
                    f" AGENTLOG_MASTER_KEY is {self.current}: set the key they were made with (a"
                    " replaced one goes in AGENTLOG_PREVIOUS_MASTER_KEYS until `agentlog keys rotate`)"
                )
            await conn.execute(
                "INSERT INTO master_keys (key_id) VALUES (%s) ON CONFLICT DO NOTHING", (self.current,)
            )
        self.checked = True

    # Data keys.

    def _remember(self, session_id: str, key: Key) -> Key:
        self.cache[session_id] = key
        self.cache.move_to_end(session_id)
        while len(self.cache) > self.cache_limit:
            self.cache.popitem(last=False)
        return key

    def forget(self, session_id: str) -> None:
        """Drop a session's key from this process (its session was deleted)."""
        self.cache.pop(session_id, None)

    def _unwrap(self, session_id: str, master_id: str | None, wrapped: bytes | None) -> Key:
        if wrapped is None:
            return DESTROYED
        master = self.masters.get(master_id or "")
        if master is None:
            raise MasterKeyError(f"session {session_id}'s key was wrapped by unknown master key {master_id}")
        try:
            return AESGCM(master.decrypt(wrapped[:12], wrapped[12:], _wrap_context(session_id)))
        except InvalidTag as exc:
            raise MasterKeyError(
                f"session {session_id}'s data key does not open with its master key"
            ) from exc

    async def for_append(self, session_id: str, tenant_id: str) -> Key:
        """The session's data key, made now if it has none (before its first sealed record)."""
        known = self.cache.get(session_id)
        if known is not None:
            self.cache.move_to_end(session_id)
            return known
        assert self.current is not None, "for_append needs a master key"
        master = self.masters[self.current]
        nonce = os.urandom(12)
        wrapped = nonce + master.encrypt(nonce, AESGCM.generate_key(256), _wrap_context(session_id))
        async with self.connection() as conn:
            # One round trip: the key made now, or the one that stands (the first writer's).
            cur = await conn.execute(
                "WITH made AS (INSERT INTO session_keys (session_id, tenant_id, master_key_id, wrapped_key)"
                " VALUES (%(sid)s, %(tenant)s, %(master)s, %(wrapped)s) ON CONFLICT (session_id) DO NOTHING"
                " RETURNING master_key_id, wrapped_key)"
                " SELECT master_key_id, wrapped_key FROM made UNION ALL"
                " SELECT master_key_id, wrapped_key FROM session_keys WHERE session_id = %(sid)s",
                {"sid": session_id, "tenant": tenant_id, "master": self.current, "wrapped": wrapped},
            )
            row = await cur.fetchone()
            if row is None:  # made by a writer that committed while this statement ran
                cur = await conn.execute(
                    "SELECT master_key_id, wrapped_key FROM session_keys WHERE session_id = %s", (session_id,)
                )
                row = await cur.fetchone()
        if row is None:
            raise MasterKeyError(f"session {session_id} has no data key, and none could be made")
        return self._remember(session_id, self._unwrap(session_id, row[0], row[1]))

    async def prefetch(self, session_ids: Iterable[str]) -> None:
        """Look up the keys of many sessions in one query (those not cached yet)."""
        wanted = [sid for sid in set(session_ids) if sid not in self.cache]
        if not wanted:
            return
        async with self.connection() as conn:
            cur = await conn.execute(
                "SELECT session_id, master_key_id, wrapped_key FROM session_keys WHERE session_id = ANY(%s)",
                (wanted,),
            )
            rows = await cur.fetchall()
        for session_id, master_id, wrapped in rows:
            if wrapped is None and self.cache.get(session_id) != DESTROYED:
                log.info("records of deleted session %s are passed over (its key is destroyed)", session_id)
            self._remember(session_id, self._unwrap(session_id, master_id, wrapped))

    async def for_reading(self, session_id: str) -> AESGCM:
        """The key that opens a sealed record of the session; Shredded once it is destroyed."""
        if session_id not in self.cache:
            await self.prefetch([session_id])
        key = self.cache.get(session_id)
        if key is None:
            raise DecodeError(f"sealed record of session {session_id}, which has no data key")
        self.cache.move_to_end(session_id)
        if key == DESTROYED:
            raise Shredded(f"session {session_id} was deleted: its records cannot be opened")
        return key

    async def destroy(self, session_id: str, tenant_id: str) -> None:
        """Destroy the session's data key and kept payloads, here and in Postgres."""
        async with self.connection() as conn:
            await destroy_key(conn, session_id, tenant_id)
        self._remember(session_id, DESTROYED)

    # Payloads kept by reference.

    async def keep(self, session_id: str, content_type: bytes, body: bytes) -> str:
        """Keep a record's bytes under their sha256 (content-addressed); returns the digest."""
        digest = hashlib.sha256(body).hexdigest()
        async with self.connection() as conn:
            await conn.execute(
                "INSERT INTO payload_blobs (sha256, session_id, content_type, size, body)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
                (digest, session_id, content_type.decode(), len(body), body),
            )
        return digest

    async def kept(self, session_id: str, digest: str, size: int) -> bytes:
        """The bytes kept under `digest`, checked against it; Shredded if the session is gone."""
        async with self.connection() as conn:
            cur = await conn.execute(
                "SELECT body FROM payload_blobs WHERE sha256 = %s AND session_id = %s", (digest, session_id)
            )
            row = await cur.fetchone()
        if row is None:
            await self.prefetch([session_id])
            if self.cache.get(session_id) == DESTROYED:
                raise Shredded(f"session {session_id} was deleted: its kept payloads are gone")
            raise DecodeError(f"payload {digest} of session {session_id} is not in payload_blobs")
        body = bytes(row[0])
        if len(body) != size or hashlib.sha256(body).hexdigest() != digest:
            raise DecodeError(f"payload {digest} of session {session_id} does not match its sha256")
        return body

    async def rotate(self) -> int:
        """Wrap every live data key with the current master key; returns how many were wrapped
        again. Afterwards the previous master keys can be dropped from the settings."""
        assert self.current is not None, "rotation needs AGENTLOG_MASTER_KEY"
        master = self.masters[self.current]
        done = 0
        async with self.connection() as conn:
            cur = await conn.execute(
                "SELECT session_id, master_key_id, wrapped_key FROM session_keys"
                " WHERE wrapped_key IS NOT NULL AND master_key_id <> %s",
                (self.current,),
            )
            for session_id, master_id, wrapped in await cur.fetchall():
                previous = self.masters.get(master_id)
                if previous is None:
                    raise MasterKeyError(
                        f"session {session_id}'s key was wrapped by unknown master key {master_id}"
                    )
                context = _wrap_context(session_id)
                nonce = os.urandom(12)
                raw = previous.decrypt(wrapped[:12], wrapped[12:], context)
                rewrapped = nonce + master.encrypt(nonce, raw, context)
                await conn.execute(
                    "UPDATE session_keys SET master_key_id = %s, wrapped_key = %s"
                    " WHERE session_id = %s AND master_key_id = %s",
                    (self.current, rewrapped, session_id, master_id),
                )
                done += 1
            await conn.execute(
                "INSERT INTO master_keys (key_id) VALUES (%s) ON CONFLICT DO NOTHING", (self.current,)
            )
            await conn.execute("DELETE FROM master_keys WHERE key_id <> %s", (self.current,))
        return done

"""Partition ownership and fencing: a replica writes for a partition only while it owns it.

When a replica is assigned partitions it claims them in Postgres (`partition_owners`): each
claim raises the partition's generation by one. Every ledger write and every offset save
for a partition checks, in the same transaction, that the writer's generation is still the
latest (`FOR SHARE`, so a claim waits for a write in progress and the write sees no claim
half done). A replica that lost a partition — killed, or paused past its session timeout
while another took it over — is refused with `Fenced`, and stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from eventstore.log import partition_for
from eventstore.store import AsyncConn

_CLAIM = (
    "INSERT INTO partition_owners (consumer, log_epoch, log_partition, generation, owner)"
    " VALUES (%s, %s, %s, 1, %s) ON CONFLICT (consumer, log_epoch, log_partition) DO UPDATE"
    " SET generation = partition_owners.generation + 1, owner = EXCLUDED.owner, claimed_at = now()"
    " RETURNING generation"
)
_CHECK = (
    "SELECT generation, owner FROM partition_owners"
    " WHERE consumer = %s AND log_epoch = %s AND log_partition = %s FOR SHARE"
)
# Many partitions' offsets in one statement: each row is written only where this replica's
# claim on its partition is the latest (share-locked, as `_CHECK`); RETURNING names those saved.
_SAVE_OFFSETS = (
    "WITH wanted AS (SELECT * FROM unnest(%(partitions)s::integer[], %(offsets)s::bigint[],"
    " %(generations)s::bigint[]) AS w(log_partition, next_offset, generation)),"
    " owned AS (SELECT w.log_partition, w.next_offset FROM wanted w JOIN partition_owners o"
    " ON o.consumer = %(consumer)s AND o.log_epoch = %(epoch)s AND o.log_partition = w.log_partition"
    " AND o.generation = w.generation FOR SHARE OF o)"
    " INSERT INTO consumer_offsets (consumer, log_epoch, topic, log_partition, next_offset)"
    " SELECT %(consumer)s, %(epoch)s, %(topic)s, log_partition, next_offset FROM owned"
    " ON CONFLICT (consumer, log_epoch, topic, log_partition) DO UPDATE"
    " SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()"
    " RETURNING log_partition"
)


class Fenced(Exception):
    """This replica no longer owns the partition it tried to write for."""


class Fence:
    """The partitions one replica of one consumer owns, with the generation of each claim."""

    def __init__(self, consumer: str, epoch: str, owner: str, partitions: int = 1) -> None:
        self.consumer = consumer
        self.epoch = epoch
        self.owner = owner
        self.partitions = partitions  # the topic's partition count, to place a session
        self.generations: dict[int, int] = {}

    def partition(self, session_id: str) -> int:
        """The partition of a session's events."""
        return partition_for(session_id, self.partitions)

    async def claim(self, conn: AsyncConn, partitions: Iterable[int]) -> dict[int, int]:
        """Claim partitions for this replica; any earlier owner is fenced from now on."""
        claimed: dict[int, int] = {}
        for partition in sorted(partitions):
            cur = await conn.execute(_CLAIM, (self.consumer, self.epoch, partition, self.owner))
            row = await cur.fetchone()
            assert row is not None
            claimed[partition] = int(row[0])
        self.generations.update(claimed)
        return claimed

    def release(self, partitions: Iterable[int]) -> None:
        """Forget partitions handed back (their next owner claims them anew)."""
        for partition in partitions:
            self.generations.pop(partition, None)

    def claim_params(self, session_id: str) -> dict[str, object]:
        """The parameters a guarded statement checks this replica's claim with (as `_CHECK`):
        f_consumer, f_epoch, f_partition, f_generation (-1 when never claimed)."""
        partition = self.partition(session_id)
        return {
            "f_consumer": self.consumer,
            "f_epoch": self.epoch,
            "f_partition": partition,
            "f_generation": self.generations.get(partition, -1),
        }

    async def lock_claim(self, conn: AsyncConn, session_id: str) -> psycopg.AsyncCursor[Any]:
        """Share-lock the claim row of a session's partition for the rest of the transaction
        (a new claim waits for the write in progress); its row is for `raise_unless_mine`.
        Returns the cursor without reading it, so that it can be sent in a pipeline."""
        return await conn.execute(_CHECK, (self.consumer, self.epoch, self.partition(session_id)))

    def raise_unless_mine(self, session_id: str, row: tuple[object, ...] | None) -> None:
        """Raise `Fenced` unless `row` (from `lock_claim`) shows this replica's claim."""
        partition = self.partition(session_id)
        mine = self.generations.get(partition)
        if mine is None or row is None or int(str(row[0])) != mine:
            held = "nobody" if row is None else f"{row[1]} (generation {row[0]})"
            raise Fenced(
                f"{self.consumer}: partition {partition} is owned by {held}, not by {self.owner}"
                f" (generation {mine})"
            )

    async def raise_unless_owned(self, conn: AsyncConn, partitions: Iterable[int]) -> None:
        """Raise `Fenced` if another replica claimed any of these partitions since this one did
        (one query): what a replica that stalled past its group's timeouts learns before it
        acts on its own initiative (timers), not only when its next write is refused."""
        mine = {p: g for p in partitions if (g := self.generations.get(p)) is not None}
        if not mine:
            return
        cur = await conn.execute(
            "SELECT log_partition, generation, owner FROM partition_owners"
            " WHERE consumer = %s AND log_epoch = %s AND log_partition = ANY(%s)",
            (self.consumer, self.epoch, sorted(mine)),
        )
        for partition, generation, owner in await cur.fetchall():
            if int(generation) != mine[int(partition)]:
                raise Fenced(
                    f"{self.consumer}: partition {partition} is owned by {owner} (generation"
                    f" {generation}), not by {self.owner} (generation {mine[int(partition)]})"
                )

    async def save_offset(self, conn: AsyncConn, topic: str, partition: int, next_offset: int) -> None:
        """Record the next offset to read (never backwards), if this replica still owns the
        partition; raises `Fenced` otherwise. One statement: no transaction needed."""
        await self.save_offsets(conn, topic, {partition: next_offset})

    async def save_offsets(self, conn: AsyncConn, topic: str, offsets: dict[int, int]) -> None:
        """`save_offset` for many partitions in one statement (one round trip per tick, not
        one per partition). Those still owned are saved; raises `Fenced` naming the others."""
        if not offsets:
            return
        partitions = sorted(offsets)
        params = {
            "consumer": self.consumer,
            "epoch": self.epoch,
            "topic": topic,
            "partitions": partitions,
            "offsets": [offsets[p] for p in partitions],
            "generations": [self.generations.get(p, -1) for p in partitions],
        }
        cur = await conn.execute(_SAVE_OFFSETS, params)
        saved = {int(row[0]) for row in await cur.fetchall()}
        refused = [p for p in partitions if p not in saved]
        if refused:
            shown = ", ".join(f"{offsets[p]} of partition {p}" for p in refused)
            raise Fenced(f"{self.consumer}: offset {shown} refused")


# Postgres advisory lock class of the workspaces (beside store's MIGRATION/PROJECTION/SESSION).
WORKSPACE_LOCK = 7_402_004


class WorkspaceBusy(Exception):
    """Another executor's call has held the workspace for longer than the wait allowed."""


@asynccontextmanager
async def workspace(conn: AsyncConn, tenant_id: str, session_id: str, wait_s: float) -> AsyncIterator[None]:
    """Hold a session's workspace across executors (one call at a time, whichever executor
    runs it): a session-level advisory lock on `conn`, released on exit or when the
    connection ends with its process. Raises `WorkspaceBusy` after `wait_s`. Within one
    process the caller serialises calls per workspace itself (the lock is re-entrant per
    connection)."""
    key = f"{tenant_id}/{session_id}"
    deadline = time.monotonic() + wait_s
    while True:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (WORKSPACE_LOCK, key))
        row = await cur.fetchone()
        if row is not None and row[0]:
            break
        if time.monotonic() >= deadline:
            raise WorkspaceBusy(f"the workspace of {session_id} is in use by another executor")
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (WORKSPACE_LOCK, key))

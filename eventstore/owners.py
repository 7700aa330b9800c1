"""Partition ownership and fencing: a replica writes for a partition only while it owns it.

When a replica is assigned partitions it claims them in Postgres (`partition_owners`): each
claim raises the partition's generation by one. Every ledger write and every offset save
for a partition checks, in the same transaction, that the writer's generation is still the
latest (`FOR SHARE`, so a claim waits for a write in progress and the write sees no claim
half done). A replica that lost a partition — killed, or paused past its session timeout
while another took it over — is refused with `Fenced`, and stops.
"""

from __future__ import annotations

from collections.abc import Iterable

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
_SAVE_OFFSET = (
    "WITH owned AS (SELECT 1 FROM partition_owners WHERE consumer = %(consumer)s"
    " AND log_epoch = %(epoch)s AND log_partition = %(partition)s AND generation = %(generation)s"
    " FOR SHARE)"
    " INSERT INTO consumer_offsets (consumer, log_epoch, topic, log_partition, next_offset)"
    " SELECT %(consumer)s, %(epoch)s, %(topic)s, %(partition)s, %(offset)s FROM owned"
    " ON CONFLICT (consumer, log_epoch, topic, log_partition) DO UPDATE"
    " SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()"
    " RETURNING 1"
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

    async def check(self, conn: AsyncConn, partition: int) -> None:
        """Raise `Fenced` unless this replica's claim on `partition` is the latest; call it inside
        the transaction whose writes it guards (the row stays share-locked until it ends)."""
        mine = self.generations.get(partition)
        cur = await conn.execute(_CHECK, (self.consumer, self.epoch, partition))
        row = await cur.fetchone()
        if mine is None or row is None or int(row[0]) != mine:
            held = "nobody" if row is None else f"{row[1]} (generation {row[0]})"
            raise Fenced(
                f"{self.consumer}: partition {partition} is owned by {held}, not by {self.owner}"
                f" (generation {mine})"
            )

    async def check_session(self, conn: AsyncConn, session_id: str) -> None:
        """`check` for the partition of a session's events."""
        await self.check(conn, self.partition(session_id))

    async def save_offset(self, conn: AsyncConn, topic: str, partition: int, next_offset: int) -> None:
        """Record the next offset to read (never backwards), if this replica still owns the
        partition; raises `Fenced` otherwise. One statement: no transaction needed."""
        params = {
            "consumer": self.consumer,
            "epoch": self.epoch,
            "topic": topic,
            "partition": partition,
            "offset": next_offset,
            "generation": self.generations.get(partition, -1),
        }
        cur = await conn.execute(_SAVE_OFFSET, params)
        if await cur.fetchone() is None:
            raise Fenced(f"{self.consumer}: offset {next_offset} of partition {partition} refused")

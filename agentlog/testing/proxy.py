"""A loopback TCP proxy in front of the broker, for network partitions in fault tests and in
`bench.chaos`: the broker advertises the proxy's port, so every Kafka connection (bootstrap and
the reconnects metadata sends it to) goes through here, and one process's connections (found
by pid, through /proc) can be blackholed or cut while the others flow.

It runs its own event loop in a thread, so a test's loop or a benchmark's blocking code can
drive it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")
Mode = Literal["blackhole", "cut"]
# Who is cut off: the pid of a process as it is now (a worker restarted under a new pid stays
# partitioned, as a pod restarted behind the same broken link would).
Who = Callable[[], int | None]


def _client_inode(client_port: int, server_port: int) -> int | None:
    """The inode of the client end of a loopback connection from `client_port` to
    `server_port` (/proc/net/tcp), or None if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == client_port and int(remote.split(":")[1], 16) == server_port:
                return int(fields[9])
    return None


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process `pid` holds open."""
    inodes = set()
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


@dataclass
class _Conn:
    """One client connection and what went through it."""

    inode: int | None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0  # bytes client -> broker
    received: int = 0  # bytes broker -> client

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class BrokerProxy:
    """Listens on 127.0.0.1:`port` and forwards each connection to 127.0.0.1:`upstream`."""

    def __init__(self, port: int, upstream: int) -> None:
        self.port = port
        self.upstream = upstream
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="broker-proxy", daemon=True)
        self._conns: list[_Conn] = []
        self._partitioned: tuple[Who, Mode] | None = None
        self._server: asyncio.Server | None = None

    def __enter__(self) -> BrokerProxy:
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self, coro: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(30)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._heal()
        for conn in self._conns:
            conn.close()
        await asyncio.sleep(0.1)  # the pumps see their connections closed and end

    def partition(self, who: Who, mode: Mode = "blackhole") -> int:
        """Cut the process `who()` names off the broker until `heal`: `blackhole` keeps its
        connections (and accepts new ones) but forwards nothing either way; `cut` closes them
        and every new one at once. Returns how many of its connections were open."""
        return self._run(self._partition(who, mode))

    async def _partition(self, who: Who, mode: Mode) -> int:
        self._partitioned = (who, mode)
        victims = [c for c in self._conns if self._victim(c)]
        for conn in victims:
            if mode == "cut":
                conn.close()
            else:
                conn.flowing.clear()
        return len(victims)

    def _victim(self, conn: _Conn) -> bool:
        """Whether the connection is the partitioned process's."""
        pid = self._partitioned[0]() if self._partitioned is not None else None
        return pid is not None and conn.inode in socket_inodes(pid)

    def heal(self) -> None:
        """Let everything flow again."""
        self._run(self._heal())

    async def _heal(self) -> None:
        self._partitioned = None
        for conn in self._conns:
            conn.flowing.set()

    def traffic(self, pid: int | None = None) -> tuple[int, int]:
        """Bytes (sent, received) through the connections open now (those of `pid` only)."""
        return self._run(self._traffic(pid))

    async def _traffic(self, pid: int | None) -> tuple[int, int]:
        mine = socket_inodes(pid) if pid is not None else None
        conns = [c for c in self._conns if mine is None or c.inode in mine]
        return sum(c.sent for c in conns), sum(c.received for c in conns)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client_port = int(writer.get_extra_info("peername")[1])
        conn = _Conn(_client_inode(client_port, self.port))
        conn.writers.append(writer)
        if self._partitioned is not None and self._victim(conn):
            if self._partitioned[1] == "cut":
                writer.close()
                return
        else:
            conn.flowing.set()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:  # the broker is down (killed, restarting): the client retries
            writer.close()
            return
        conn.writers.append(up_writer)
        self._conns.append(conn)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, conn, True), self._pump(up_reader, writer, conn, False)
            )
        finally:
            conn.close()
            self._conns.remove(conn)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn, outbound: bool
    ) -> None:
        """Forward one direction while the connection flows; a blackholed one holds what it
        read (the kernel's buffers then fill, as on a dead link) until healed."""
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                await conn.flowing.wait()
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
                if outbound:
                    conn.sent += len(data)
                else:
                    conn.received += len(data)
        conn.close()


@contextlib.contextmanager
def partitioned(proxy: BrokerProxy, who: Who, mode: Mode = "blackhole") -> Iterator[int]:
    """`proxy.partition(who, mode)` for the block; healed after it."""
    count = proxy.partition(who, mode)
    try:
        yield count
    finally:
        proxy.heal()

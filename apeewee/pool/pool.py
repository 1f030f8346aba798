"""The asyncio connection pool: waiters served first-in first-out, deadlines, safe release.

Every decision (hand out, open, discard, wake a waiter) is taken synchronously between
awaits, so no lock is needed: the pool belongs to one event loop. I/O (connect, close,
rollback) happens after the bookkeeping that makes it safe is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..drivers.base import DriverConnection
from ..errors import PoolClosed, PoolTimeout
from .stats import PoolStats

__all__ = ["Pool", "PooledConnection"]

logger = logging.getLogger("apeewee.pool")

Connector = Callable[[], Awaitable[DriverConnection]]


class PooledConnection:
    """A driver connection owned by a pool, with its timestamps and current holder."""

    __slots__ = ("checked_out_at", "conn", "created_at", "holder", "idle_since", "pool")

    def __init__(self, conn: DriverConnection, pool: Pool, now: float) -> None:
        self.conn = conn
        self.pool = pool
        self.created_at = now
        self.idle_since = now
        self.checked_out_at = now
        self.holder: asyncio.Task[Any] | None = None

    def __repr__(self) -> str:
        return f"<PooledConnection {self.conn!r} age={time.monotonic() - self.created_at:.1f}s>"


class Pool:
    """A bounded set of connections on one event loop.

    ``max_connections`` bounds open plus opening connections; ``min_connections`` are
    opened in the background once the pool starts; a connection older than
    ``stale_timeout`` seconds is closed instead of reused; ``timeout`` bounds how long
    ``acquire`` waits (None waits forever) before raising ``PoolTimeout``.
    """

    def __init__(
        self,
        connect: Connector,
        *,
        max_connections: int = 20,
        min_connections: int = 0,
        stale_timeout: float | None = None,
        timeout: float | None = None,
        name: str = "",
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        if not 0 <= min_connections <= max_connections:
            raise ValueError(
                f"min_connections must be between 0 and max_connections ({max_connections}), "
                f"got {min_connections}"
            )
        self.loop = asyncio.get_running_loop()
        self.name = name
        self.max_connections = max_connections
        self.min_connections = min_connections
        self.stale_timeout = stale_timeout
        self.timeout = timeout
        self._connect = connect
        self._idle: list[PooledConnection] = []  # a stack: the warmest connection first
        self._in_use: set[PooledConnection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[PooledConnection | None]] = deque()
        self._closing = False
        self._background: set[asyncio.Task[Any]] = set()
        self._drained: asyncio.Event | None = None
        self._stats = PoolStats(max=max_connections, min=min_connections, open=0, idle=0,
                                in_use=0, waiting=0)
        self._fill()

    # -- figures -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Open plus opening connections: what counts against max_connections."""
        return len(self._idle) + len(self._in_use) + self._opening

    @property
    def closing(self) -> bool:
        return self._closing

    def stats(self) -> PoolStats:
        s = self._stats
        s.idle = len(self._idle)
        s.in_use = len(self._in_use)
        s.open = s.idle + s.in_use
        s.opening = self._opening
        s.waiting = sum(1 for f in self._waiters if not f.done())
        return PoolStats(**{**s.as_dict(), "discarded_total": dict(s.discarded_total)})

    def __repr__(self) -> str:
        return (f"<Pool {self.name} max={self.max_connections} idle={len(self._idle)} "
                f"in_use={len(self._in_use)} opening={self._opening} "
                f"waiting={len(self._waiters)}{' closing' if self._closing else ''}>")

    # -- acquire -------------------------------------------------------------------------

    async def acquire(self) -> PooledConnection:
        """Check out a connection: an idle one, a new one, or the next one released."""
        if self._closing:
            raise PoolClosed(f"the pool of {self.name} is closing; no new connections")
        now = time.monotonic()
        idle = self._idle
        while idle:
            entry = idle.pop()
            reason = self._unfit(entry, now)
            if reason is None:
                return self._checkout(entry, now)
            self._discard(entry, reason)
        if not self._waiters and self.size < self.max_connections:
            self._opening += 1
            return await self._open_reserved()
        return await self._wait(now)

    def _unfit(self, entry: PooledConnection, now: float) -> str | None:
        if not entry.conn.is_usable():
            return "broken"
        if self.stale_timeout is not None and now - entry.created_at > self.stale_timeout:
            return "stale"
        return None

    def _checkout(self, entry: PooledConnection, now: float) -> PooledConnection:
        self._in_use.add(entry)
        entry.checked_out_at = now
        entry.holder = asyncio.current_task()
        self._stats.acquired_total += 1
        return entry

    async def _open_reserved(self) -> PooledConnection:
        """Open a connection for the caller; a slot was already counted in ``_opening``."""
        try:
            conn = await self._connect()
        except BaseException:
            self._opening -= 1
            self._slot_freed()
            raise
        self._opening -= 1
        now = time.monotonic()
        entry = PooledConnection(conn, self, now)
        self._stats.opened_total += 1
        logger.debug("opened %r for %s", conn, self.name)
        if self._closing:
            self._close_soon(entry, "pool closing")
            raise PoolClosed(f"the pool of {self.name} closed while connecting")
        return self._checkout(entry, now)

    async def _wait(self, now: float) -> PooledConnection:
        fut: asyncio.Future[PooledConnection | None] = self.loop.create_future()
        self._waiters.append(fut)
        timer = None
        if self.timeout is not None:
            timer = self.loop.call_at(self.loop.time() + self.timeout, self._expire, fut)
        try:
            got = await fut
        except BaseException:
            self._abandon_wait(fut)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            waited = time.monotonic() - now
            self._stats.wait_time_total += waited
            if waited > self._stats.wait_time_max:
                self._stats.wait_time_max = waited
        if got is None:  # a slot was freed and reserved for us
            return await self._open_reserved()
        got.holder = asyncio.current_task()  # _checkin ran in the releasing task
        return got

    def _abandon_wait(self, fut: asyncio.Future[PooledConnection | None]) -> None:
        """Undo a wait that ended by cancellation or timeout, returning anything handed to it."""
        try:
            self._waiters.remove(fut)
        except ValueError:
            pass
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            got = fut.result()
            if got is None:
                self._opening -= 1
                self._slot_freed()
            else:
                # Handed a connection in the same loop iteration as the cancellation.
                self._in_use.discard(got)
                got.holder = None
                self._checkin(got)

    def _expire(self, fut: asyncio.Future[PooledConnection | None]) -> None:
        if fut.done():
            return
        self._stats.timeouts_total += 1
        fut.set_exception(PoolTimeout(self._timeout_message()))

    def _timeout_message(self) -> str:
        now = time.monotonic()
        holders = sorted(self._in_use, key=lambda e: e.checked_out_at)[:5]
        held = ", ".join(
            f"{_task_name(e.holder)} ({now - e.checked_out_at:.1f} s)" for e in holders
        )
        waiting = sum(1 for f in self._waiters if not f.done())
        return (
            f"couldn't get a connection after {self.timeout:g} s "
            f"(max_connections={self.max_connections}, {len(self._in_use)} in use, "
            f"{waiting} waiting); longest holders: {held or 'none'}"
        )

    # -- release -------------------------------------------------------------------------

    async def release(self, entry: PooledConnection, discard: str | None = None) -> None:
        """Return a connection. One left in a transaction is rolled back first; one that
        cannot be reset, or ``discard`` (a reason), is closed instead of reused."""
        if entry not in self._in_use:
            return  # already released, or terminated by close()
        conn = entry.conn
        if discard is None:
            if not conn.is_usable():
                discard = "broken"
            elif conn.in_transaction():
                try:
                    await conn.rollback()
                except asyncio.CancelledError:
                    self._in_use.discard(entry)
                    self._discard(entry, "cancelled during reset", terminate=True)
                    raise
                except Exception as exc:
                    logger.warning("rollback on release failed (%s); discarding", exc)
                    discard = "reset failed"
                if entry not in self._in_use:
                    return
        self._in_use.discard(entry)
        entry.holder = None
        if discard is not None:
            self._discard(entry, discard)
        else:
            self._checkin(entry)
        if not self._in_use and self._drained is not None:
            self._drained.set()

    def _checkin(self, entry: PooledConnection) -> None:
        now = time.monotonic()
        reason = "pool closing" if self._closing else self._unfit(entry, now)
        if reason is not None:
            self._discard(entry, reason)
            return
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(self._checkout(entry, now))
                return
        entry.idle_since = now
        self._idle.append(entry)

    # -- closing -------------------------------------------------------------------------

    def _discard(self, entry: PooledConnection, reason: str, terminate: bool = False) -> None:
        """Close a connection that is no longer counted (idle popped or in-use removed)."""
        counts = self._stats.discarded_total
        counts[reason] = counts.get(reason, 0) + 1
        if terminate:
            self._stats.closed_total += 1
            logger.debug("terminated %r: %s", entry.conn, reason)
            entry.conn.terminate()
        else:
            self._close_soon(entry, reason)
        self._slot_freed()

    def _close_soon(self, entry: PooledConnection, reason: str) -> None:
        self._stats.closed_total += 1
        logger.debug("closing %r: %s", entry.conn, reason)
        self._spawn(self._close_conn(entry.conn))

    async def _close_conn(self, conn: DriverConnection) -> None:
        try:
            await asyncio.wait_for(conn.close(), 5)
        except BaseException:
            conn.terminate()

    def _slot_freed(self) -> None:
        """A slot is free: give it to the first waiter (who opens a connection), or refill."""
        if self._closing:
            return
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                self._opening += 1
                fut.set_result(None)
                return
        self._fill()

    def _fill(self) -> None:
        """Open connections in the background up to min_connections."""
        while not self._closing and self.size < self.min_connections:
            self._opening += 1
            self._spawn(self._open_idle())

    async def _open_idle(self) -> None:
        try:
            conn = await self._connect()
        except Exception as exc:
            self._opening -= 1
            logger.warning("could not open a connection for %s: %s", self.name, exc)
            if self._waiters:
                self._slot_freed()  # a waiter may try; no refill loop without one
            return
        self._opening -= 1
        entry = PooledConnection(conn, self, time.monotonic())
        self._stats.opened_total += 1
        self._checkin(entry)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self, timeout: float | None = 10.0) -> None:
        """Stop handing out connections, close the idle ones, wait up to ``timeout`` for
        checked-out ones to come back, then close those too."""
        self._closing = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(PoolClosed(f"the pool of {self.name} was closed"))
        while self._idle:
            self._close_soon(self._idle.pop(), "pool closing")
        if self._in_use:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                pass
            for entry in list(self._in_use):
                logger.warning("closing %r still held by %s after %s s",
                               entry.conn, _task_name(entry.holder), timeout)
                self._in_use.discard(entry)
                self._stats.closed_total += 1
                entry.conn.terminate()
        me = asyncio.current_task()
        while pending := [t for t in self._background if t is not me]:
            await asyncio.gather(*pending, return_exceptions=True)

    def abandon(self) -> None:
        """Terminate every connection without awaiting: the pool's loop is gone."""
        self._closing = True
        for entry in [*self._idle, *self._in_use]:
            self._stats.closed_total += 1
            entry.conn.terminate()
        self._idle.clear()
        self._in_use.clear()
        self._waiters.clear()


def _task_name(task: asyncio.Task[Any] | None) -> str:
    return task.get_name() if task is not None else "no task"

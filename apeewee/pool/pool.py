"""The asyncio connection pool: waiters served first-in first-out, deadlines, safe release.

Every decision (hand out, open, discard, wake a waiter) is taken synchronously between
awaits, so no lock is needed: the pool belongs to one event loop. I/O (connect, close,
ping, rollback) happens after the bookkeeping that makes it safe is done, and every
path that awaits with a connection checked out undoes its bookkeeping on cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..drivers.base import DriverConnection
from ..errors import PoolClosed, PoolTimeout
from .stats import PoolStats

__all__ = ["Pool", "PooledConnection"]

logger = logging.getLogger("apeewee.pool")

Connector = Callable[[], Awaitable[DriverConnection]]

# Reasons a connection is closed that mean something went wrong (logged as warnings).
_BAD_REASONS = frozenset({"dead", "broken", "reset failed", "leaked"})


class PooledConnection:
    """A driver connection owned by a pool, with its timestamps and current holder."""

    __slots__ = ("acquired_at", "checked_out_at", "checkouts", "conn", "created_at",
                 "holder", "idle_since", "leak_timer", "max_age", "pool")

    def __init__(self, conn: DriverConnection, pool: Pool, now: float,
                 max_age: float | None) -> None:
        self.conn = conn
        self.pool = pool
        self.created_at = now
        self.idle_since = now
        self.checked_out_at = now
        self.max_age = max_age
        self.checkouts = 0
        self.holder: asyncio.Task[Any] | None = None
        self.leak_timer: asyncio.TimerHandle | None = None
        self.acquired_at: list[str] | None = None

    def __repr__(self) -> str:
        return f"<PooledConnection {self.conn!r} age={time.monotonic() - self.created_at:.1f}s>"


class Pool:
    """A bounded set of connections on one event loop.

    ``max_connections`` bounds open plus opening connections; ``min_connections`` are
    kept open (refilled in the background); a connection older than ``stale_timeout``
    seconds (less up to 10% random jitter, so connections opened together do not
    expire together) or idle longer than ``max_idle`` is closed instead of reused; one
    idle longer than ``ping_after`` seconds is pinged before it is handed out (0: always,
    None: never); ``leak_timeout`` logs a warning when a connection is held longer;
    ``timeout`` bounds how long ``acquire`` may take (None: no bound) before
    ``PoolTimeout``.
    """

    def __init__(
        self,
        connect: Connector,
        *,
        max_connections: int = 20,
        min_connections: int = 0,
        stale_timeout: float | None = None,
        max_idle: float | None = None,
        ping_after: float | None = 2.0,
        ping_timeout: float = 5.0,
        leak_timeout: float | None = None,
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
        self.max_idle = max_idle
        self.ping_after = ping_after
        self.ping_timeout = ping_timeout
        self.leak_timeout = leak_timeout
        self.timeout = timeout
        self._connect = connect
        self._idle: list[PooledConnection] = []  # a stack: the warmest connection last
        self._in_use: set[PooledConnection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[PooledConnection | None]] = deque()
        self._closing = False
        self._background: set[asyncio.Task[Any]] = set()
        self._drained: asyncio.Event | None = None
        self._last_connect_error: BaseException | None = None
        self._stats = PoolStats(max=max_connections, min=min_connections, open=0, idle=0,
                                in_use=0, waiting=0)
        self._reaper: asyncio.Task[None] | None = None
        if stale_timeout is not None or max_idle is not None:
            self._reaper = self.loop.create_task(self._reap_forever())
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
        """Check out a connection: an idle one (pinged if it sat idle long), a new one, or
        the next one released. Raises ``PoolTimeout`` after ``timeout`` seconds."""
        if self._closing:
            raise PoolClosed(f"the pool of {self.name} is closing; no new connections")
        start = time.monotonic()
        deadline = None if self.timeout is None else self.loop.time() + self.timeout
        while True:
            entry = self._take_idle(start)
            if entry is None:
                if not self._waiters and self.size < self.max_connections:
                    self._opening += 1
                    return await self._open_reserved(deadline)
                entry = await self._wait(start, deadline)
                if entry is None:  # a slot was freed and reserved for us
                    return await self._open_reserved(deadline)
            if await self._healthy(entry, deadline):
                return entry

    def _take_idle(self, now: float) -> PooledConnection | None:
        idle = self._idle
        while idle:
            entry = idle.pop()
            reason = self._unfit(entry, now)
            if reason is None:
                return self._checkout(entry, now)
            self._discard(entry, reason)
        return None

    def _unfit(self, entry: PooledConnection, now: float) -> str | None:
        if not entry.conn.is_usable():
            return "dead"
        if entry.max_age is not None and now - entry.created_at > entry.max_age:
            return "stale"
        if self.max_idle is not None and now - entry.idle_since > self.max_idle:
            return "idle"
        return None

    async def _healthy(self, entry: PooledConnection, deadline: float | None) -> bool:
        """Ping a reused connection that sat idle at least ``ping_after`` seconds; a dead
        one is discarded (the caller then takes another). The ping never outlasts the
        acquisition's deadline: then ``PoolTimeout``, and the connection is closed (its
        state after an unanswered ping is unknown)."""
        if self.ping_after is None or entry.checkouts <= 1:
            return True  # never pinged, or fresh from connect()
        if time.monotonic() - entry.idle_since < self.ping_after:
            return True
        limit = self.loop.time() + self.ping_timeout
        if deadline is not None and deadline < limit:
            limit = deadline
        try:
            async with asyncio.timeout_at(limit):
                await entry.conn.ping()
        except TimeoutError:
            self._in_use.discard(entry)
            self._discard(entry, "dead", terminate=True)
            if deadline is not None and self.loop.time() >= deadline:
                self._stats.timeouts_total += 1
                raise PoolTimeout(self._timeout_message("while checking a connection")) from None
            return False
        except asyncio.CancelledError:
            self._in_use.discard(entry)
            self._discard(entry, "cancelled during ping", terminate=True)
            raise
        except Exception as exc:
            logger.warning("discarding a dead connection of %s (ping failed: %r)", self.name, exc)
            self._in_use.discard(entry)
            self._discard(entry, "dead", terminate=True)
            return False
        return True

    def _checkout(self, entry: PooledConnection, now: float) -> PooledConnection:
        self._in_use.add(entry)
        entry.checked_out_at = now
        entry.checkouts += 1
        entry.holder = asyncio.current_task()
        self._stats.acquired_total += 1
        if self.leak_timeout is not None:
            self._watch_for_leak(entry)
        return entry

    def _watch_for_leak(self, entry: PooledConnection) -> None:
        # The awaiting coroutines are on the frame stack, so this is the user's stack.
        entry.acquired_at = traceback.format_stack(limit=16)[:-3]
        entry.leak_timer = self.loop.call_later(
            self.leak_timeout, self._report_leak, entry, entry.checkouts)  # type: ignore[arg-type]

    def _report_leak(self, entry: PooledConnection, checkout: int) -> None:
        if entry not in self._in_use or entry.checkouts != checkout:
            return
        held = time.monotonic() - entry.checked_out_at
        logger.warning(
            "connection of %s held for %.1f s (leak_timeout=%s) by task %s; acquired at:\n%s",
            self.name, held, self.leak_timeout, _task_name(entry.holder),
            "".join(entry.acquired_at or ["  (stack not recorded)\n"]))

    async def _open_reserved(self, deadline: float | None) -> PooledConnection:
        """Open a connection for the caller; a slot was already counted in ``_opening``."""
        try:
            if deadline is None:
                conn = await self._connect()
            else:
                async with asyncio.timeout_at(deadline):
                    conn = await self._connect()
        except TimeoutError as exc:
            self._opening -= 1
            self._slot_freed()
            self._stats.timeouts_total += 1
            raise PoolTimeout(self._timeout_message("while connecting")) from exc
        except BaseException as exc:
            self._opening -= 1
            if not isinstance(exc, asyncio.CancelledError):
                self._last_connect_error = exc
            self._slot_freed()
            raise
        self._opening -= 1
        self._last_connect_error = None
        self._fill()  # the server answers (again): back up to min_connections
        now = time.monotonic()
        entry = self._new_entry(conn, now)
        if self._closing:
            self._close_soon(entry, "pool closing")
            raise PoolClosed(f"the pool of {self.name} closed while connecting")
        return self._checkout(entry, now)

    def _new_entry(self, conn: DriverConnection, now: float) -> PooledConnection:
        max_age = self.stale_timeout
        if max_age is not None:
            max_age *= 1.0 - 0.1 * random.random()  # jitter: not all at once
        self._stats.opened_total += 1
        logger.debug("opened %r for %s", conn, self.name)
        return PooledConnection(conn, self, now, max_age)

    async def _wait(self, start: float, deadline: float | None) -> PooledConnection | None:
        fut: asyncio.Future[PooledConnection | None] = self.loop.create_future()
        self._waiters.append(fut)
        timer = None if deadline is None else self.loop.call_at(deadline, self._expire, fut)
        try:
            got = await fut
        except BaseException:
            self._abandon_wait(fut)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            waited = time.monotonic() - start
            self._stats.wait_time_total += waited
            if waited > self._stats.wait_time_max:
                self._stats.wait_time_max = waited
        if got is not None:
            # _checkin ran in the releasing task: the holder and its stack are ours.
            got.holder = asyncio.current_task()
            if self.leak_timeout is not None:
                got.acquired_at = traceback.format_stack(limit=16)[:-2]
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
                self._stop_leak_watch(got)
                got.holder = None
                self._checkin(got)

    def _expire(self, fut: asyncio.Future[PooledConnection | None]) -> None:
        if fut.done():
            return
        self._stats.timeouts_total += 1
        fut.set_exception(PoolTimeout(self._timeout_message()))

    def _timeout_message(self, during: str = "") -> str:
        now = time.monotonic()
        holders = sorted(self._in_use, key=lambda e: e.checked_out_at)[:5]
        held = ", ".join(
            f"{_task_name(e.holder)} ({now - e.checked_out_at:.1f} s)" for e in holders
        )
        waiting = sum(1 for f in self._waiters if not f.done())
        last = self._last_connect_error
        return (
            f"couldn't get a connection after {self.timeout:g} s{' ' + during if during else ''} "
            f"(max_connections={self.max_connections}, {len(self._in_use)} in use, "
            f"{waiting} waiting); longest holders: {held or 'none'}"
            + (f"; last connection error: {last!r}" if last is not None else "")
        )

    # -- release -------------------------------------------------------------------------

    async def release(self, entry: PooledConnection, discard: str | None = None) -> None:
        """Return a connection. One left in a transaction is rolled back first; one that
        cannot be reset, or ``discard`` (a reason), is closed instead of reused."""
        if entry not in self._in_use:
            return  # already released, or closed by close()/close_stale()
        conn = entry.conn
        if discard is None:
            if not conn.is_usable():
                discard = "dead"
            elif conn.in_transaction():
                try:
                    await conn.rollback()
                except asyncio.CancelledError:
                    if entry in self._in_use:
                        self._in_use.discard(entry)
                        self._stop_leak_watch(entry)
                        self._discard(entry, "cancelled during reset", terminate=True)
                    raise
                except Exception as exc:
                    logger.warning("rollback on release failed (%r); discarding", exc)
                    discard = "reset failed"
                if entry not in self._in_use:
                    return
        self._in_use.discard(entry)
        self._stop_leak_watch(entry)
        entry.holder = None
        if discard is not None:
            self._discard(entry, discard)
        else:
            self._checkin(entry)
        if not self._in_use and self._drained is not None:
            self._drained.set()

    def _stop_leak_watch(self, entry: PooledConnection) -> None:
        if entry.leak_timer is not None:
            entry.leak_timer.cancel()
            entry.leak_timer = None

    def _checkin(self, entry: PooledConnection) -> None:
        now = time.monotonic()
        entry.idle_since = now
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
        self._idle.append(entry)

    # -- closing -------------------------------------------------------------------------

    def _discard(self, entry: PooledConnection, reason: str, terminate: bool = False) -> None:
        """Close a connection that is no longer counted (idle popped or in-use removed)."""
        counts = self._stats.discarded_total
        counts[reason] = counts.get(reason, 0) + 1
        if reason in _BAD_REASONS:
            logger.warning("discarding %r of %s: %s", entry.conn, self.name, reason)
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
            async with asyncio.timeout(5):
                await conn.close()
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
            async with asyncio.timeout(self.timeout or 60):
                conn = await self._connect()
        except Exception as exc:
            self._opening -= 1
            self._last_connect_error = exc
            logger.warning("could not open a connection for %s: %r", self.name, exc)
            if self._waiters:
                self._slot_freed()  # a waiter may try; no refill loop without one
            return
        self._opening -= 1
        self._checkin(self._new_entry(conn, time.monotonic()))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_forever(self) -> None:
        """Close idle connections past their age or idleness, then refill to the minimum."""
        limits = [t for t in (self.stale_timeout, self.max_idle) if t is not None]
        interval = min(max(min(limits) / 4, 0.05), 30.0)
        while not self._closing:
            await asyncio.sleep(interval)
            self.reap()

    def reap(self) -> int:
        """Close the idle connections that are too old, too long idle (down to
        min_connections) or dead; returns how many."""
        now = time.monotonic()
        keep: list[PooledConnection] = []
        closed = 0
        for entry in self._idle:
            reason = self._unfit(entry, now)
            if reason == "idle" and len(keep) + len(self._in_use) < self.min_connections:
                reason = None  # idleness alone never takes the pool below its minimum
            if reason is None:
                keep.append(entry)
            else:
                self._stats.discarded_total[reason] = (
                    self._stats.discarded_total.get(reason, 0) + 1)
                if reason in _BAD_REASONS:
                    logger.warning("discarding %r of %s: %s", entry.conn, self.name, reason)
                self._close_soon(entry, reason)
                closed += 1
        self._idle = keep
        if closed:
            self._fill()
        return closed

    def close_idle(self) -> int:
        """Close every idle connection now (the minimum is refilled); returns how many."""
        idle, self._idle = self._idle, []
        for entry in idle:
            self._stats.discarded_total["closed idle"] = (
                self._stats.discarded_total.get("closed idle", 0) + 1)
            self._close_soon(entry, "closed idle")
        self._fill()
        return len(idle)

    def close_stale(self, age: float) -> int:
        """Close connections checked out longer than ``age`` seconds (their holders'
        next statement fails); returns how many."""
        now = time.monotonic()
        stale = [e for e in self._in_use if now - e.checked_out_at > age]
        for entry in stale:
            self._in_use.discard(entry)
            self._stop_leak_watch(entry)
            logger.warning("closing a connection of %s held for %.1f s by %s (close_stale)",
                           self.name, now - entry.checked_out_at, _task_name(entry.holder))
            self._discard(entry, "leaked", terminate=True)
        return len(stale)

    async def close(self, timeout: float | None = 10.0) -> None:
        """Stop handing out connections, close the idle ones, wait up to ``timeout`` for
        checked-out ones to come back, then close those too."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(PoolClosed(f"the pool of {self.name} was closed"))
        while self._idle:
            self._close_soon(self._idle.pop(), "pool closing")
        if self._in_use:
            self._drained = asyncio.Event()
            try:
                async with asyncio.timeout(timeout):
                    await self._drained.wait()
            except TimeoutError:
                pass
            for entry in list(self._in_use):
                logger.warning("closing %r still held by %s after %s s",
                               entry.conn, _task_name(entry.holder), timeout)
                self._in_use.discard(entry)
                self._stop_leak_watch(entry)
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

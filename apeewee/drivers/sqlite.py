"""aiosqlite adapter: autocommit mode; peewee's pragmas and functions applied per connection."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from .base import Result, map_dbapi_error

try:
    import aiosqlite
except ImportError:  # pragma: no cover - exercised only without the extra
    aiosqlite = None

__all__ = ["SqliteDriver"]

LOCK_TYPES = frozenset({"deferred", "immediate", "exclusive"})


def map_error(exc: BaseException) -> peewee.PeeweeException | None:
    """The peewee exception for a sqlite3/aiosqlite exception, or None."""
    mapped = map_dbapi_error(exc)
    text = str(exc).lower()
    if mapped is None and isinstance(exc, ValueError) and ("closed" in text
                                                           or "no active connection" in text):
        # aiosqlite 0.22 raises ValueError("Connection closed" / "no active connection")
        # once the connection is closed.
        return peewee.InterfaceError(f"the connection is closed ({exc})")
    return mapped


def _run_statement(raw: Any, sql: str, params: Sequence[Any]) -> tuple[Any, ...]:
    """Runs in aiosqlite's thread: execute, fetch everything, read the cursor's facts."""
    cursor = raw._conn.execute(sql, params)
    try:
        return cursor.fetchall(), cursor.description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _begin_and_run(raw: Any, sql: str, params: Sequence[Any]) -> tuple[Any, ...]:
    """Runs in aiosqlite's thread: a deferred BEGIN, then the transaction's first statement."""
    raw._conn.execute("BEGIN").close()
    return _run_statement(raw, sql, params)


class SqliteConnection:
    """One aiosqlite connection (a sqlite3 connection served by aiosqlite's thread)."""

    __slots__ = ("_begin_pending", "_closed", "_driver", "_loaded", "_one_hop", "raw")

    def __init__(self, raw: Any, driver: SqliteDriver) -> None:
        self.raw = raw
        self._closed = False
        # aiosqlite 0.20-0.22 queues work for its thread with Connection._execute(fn,
        # *args); using it runs a statement and fetches its rows in one hop. Without
        # it, fall back to the public execute() + fetchall() (two hops).
        self._one_hop = callable(getattr(raw, "_execute", None))
        self._driver = driver
        self._loaded: set[str] = set()
        # A plain (deferred) BEGIN takes no lock and reads nothing: it is sent with the
        # transaction's first statement, in the same trip to aiosqlite's thread.
        self._begin_pending = False

    async def load_functions(self) -> None:
        """Register the database's user functions not yet on this connection."""
        for name, (fn, num_params, deterministic) in list(self._driver.functions.items()):
            if name not in self._loaded:
                await self.raw.create_function(name, num_params, fn, deterministic=deterministic)
                self._loaded.add(name)

    async def execute(self, sql: str, params: Sequence[Any] | None) -> Result:
        if self._closed:
            raise peewee.InterfaceError("the connection is closed")
        try:
            if len(self._loaded) != len(self._driver.functions):
                await self.load_functions()  # a function was registered since
            if self._one_hop:
                # One trip to aiosqlite's thread instead of two (execute, fetchall).
                run = _run_statement
                if self._begin_pending:
                    self._begin_pending = False
                    run = _begin_and_run
                rows, description, rowcount, lastrowid = await self.raw._execute(
                    run, self.raw, sql, params or ())
                return Result(rows, description, rowcount, lastrowid)
            if self._begin_pending:
                self._begin_pending = False
                await self.raw.execute("BEGIN")
            cursor = await self.raw.execute(sql, params or ())
            rows = await cursor.fetchall()
            return Result(rows, cursor.description, cursor.rowcount, cursor.lastrowid)
        except asyncio.CancelledError:
            # aiosqlite's thread would run the statement to its end (holding the write
            # lock); sqlite3's interrupt() is safe from any thread and stops it now.
            self._interrupt()
            raise
        except Exception as exc:
            mapped = map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def ping(self) -> None:
        await self.execute("SELECT 1", None)

    async def begin(self, isolation_level: str | None = None, lock_type: str | None = None) -> None:
        if isolation_level is not None:
            raise ValueError("SQLite has no isolation levels; use lock_type='immediate' etc.")
        if self._begin_pending or self.in_transaction():
            raise peewee.OperationalError("cannot start a transaction within a transaction")
        if lock_type is None or lock_type.lower() == "deferred":
            self._begin_pending = True  # sent with the first statement
            return
        if lock_type.lower() not in LOCK_TYPES:
            raise ValueError(f"unknown SQLite lock type {lock_type!r}; use one of: "
                             + ", ".join(sorted(LOCK_TYPES)))
        await self.execute(f"BEGIN {lock_type.upper()}", None)

    async def commit(self) -> None:
        if self._begin_pending:  # no statement ran: there is nothing to commit
            self._begin_pending = False
            return
        await self.execute("COMMIT", None)

    async def rollback(self) -> None:
        if self._begin_pending:
            self._begin_pending = False
            return
        await self.execute("ROLLBACK", None)

    def in_transaction(self) -> bool:
        if self._begin_pending:
            return True
        try:
            return bool(self.raw.in_transaction)
        except ValueError:  # already closed
            return False

    def is_usable(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        await self.raw.close()

    def _interrupt(self) -> None:
        try:
            self.raw._conn.interrupt()  # aiosqlite 0.20-0.22: the sqlite3 connection
        except Exception:  # already closed
            pass

    def terminate(self) -> None:
        self._interrupt()
        self._closed = True
        # stop() queues close-and-stop on aiosqlite's thread without awaiting, so the
        # thread ends even when the loop that opened the connection is gone.
        self.raw.stop()


class SqliteDriver:
    """Opens aiosqlite connections with peewee's SqliteDatabase settings."""

    name = "sqlite"

    def __init__(
        self,
        database: str,
        params: dict[str, Any],
        *,
        pragmas: Sequence[tuple[str, Any]] = (),
        functions: dict[str, tuple[Callable[..., Any], int, bool]] | None = None,
    ) -> None:
        if aiosqlite is None:
            raise ImportError("apeewee.SqliteDatabase needs aiosqlite: pip install apeewee[sqlite]")
        self.database = database
        options = dict(params)
        # Autocommit: peewee issues BEGIN/COMMIT itself, as its own SqliteDatabase does.
        options["isolation_level"] = None
        options.setdefault("timeout", 5.0)
        self._options = options
        self._pragmas = list(pragmas)
        # The database's own dict, shared: functions registered later reach every
        # connection before its next statement.
        self.functions = functions if functions is not None else {}
        self._setup_lock = asyncio.Lock()

    async def connect(self) -> SqliteConnection:
        # One connection set up at a time: concurrent first connections to a new file
        # racing to switch it to WAL get "database is locked" without waiting.
        async with self._setup_lock:
            try:
                raw = await aiosqlite.connect(self.database, **self._options)
            except (sqlite3.Error, OSError) as exc:
                mapped = map_error(exc) or peewee.OperationalError(str(exc))
                raise mapped from exc
            conn = SqliteConnection(raw, self)
            try:
                for key, value in self._pragmas:
                    await conn.execute(f"PRAGMA {key} = {value}", None)
                await conn.load_functions()
            except BaseException:
                conn.terminate()
                raise
        return conn

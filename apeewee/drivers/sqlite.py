"""aiosqlite adapter: autocommit mode; peewee's pragmas and functions applied per connection."""

from __future__ import annotations

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
    if mapped is None and isinstance(exc, ValueError) and "closed" in str(exc).lower():
        # aiosqlite 0.2x raises ValueError("Connection closed") after close().
        return peewee.InterfaceError(str(exc))
    return mapped


class SqliteConnection:
    """One aiosqlite connection (a sqlite3 connection served by aiosqlite's thread)."""

    __slots__ = ("_closed", "raw")

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._closed = False

    async def execute(self, sql: str, params: Sequence[Any] | None) -> Result:
        try:
            cursor = await self.raw.execute(sql, params or ())
            rows = await cursor.fetchall()
            return Result(rows, cursor.description, cursor.rowcount, cursor.lastrowid)
        except Exception as exc:
            mapped = map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def begin(self, isolation_level: str | None = None, lock_type: str | None = None) -> None:
        if isolation_level is not None:
            raise ValueError("SQLite has no isolation levels; use lock_type='immediate' etc.")
        if lock_type is None:
            await self.execute("BEGIN", None)
            return
        if lock_type.lower() not in LOCK_TYPES:
            raise ValueError(f"unknown SQLite lock type {lock_type!r}; use one of: "
                             + ", ".join(sorted(LOCK_TYPES)))
        await self.execute(f"BEGIN {lock_type.upper()}", None)

    async def commit(self) -> None:
        await self.execute("COMMIT", None)

    async def rollback(self) -> None:
        await self.execute("ROLLBACK", None)

    def in_transaction(self) -> bool:
        try:
            return bool(self.raw.in_transaction)
        except ValueError:  # already closed
            return False

    def is_usable(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        await self.raw.close()

    def terminate(self) -> None:
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
        self._functions = dict(functions or {})

    async def connect(self) -> SqliteConnection:
        try:
            raw = await aiosqlite.connect(self.database, **self._options)
        except (sqlite3.Error, OSError) as exc:
            mapped = map_error(exc) or peewee.OperationalError(str(exc))
            raise mapped from exc
        conn = SqliteConnection(raw)
        try:
            for key, value in self._pragmas:
                await conn.execute(f"PRAGMA {key} = {value}", None)
            for name, (fn, num_params, deterministic) in self._functions.items():
                await raw.create_function(name, num_params, fn, deterministic=deterministic)
        except BaseException:
            conn.terminate()
            raise
        return conn

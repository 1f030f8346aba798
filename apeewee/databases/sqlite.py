"""apeewee.SqliteDatabase: peewee's SqliteDatabase over aiosqlite."""

from __future__ import annotations

from typing import Any

import peewee

from ..drivers.sqlite import SqliteDriver
from .base import AsyncDatabase

__all__ = ["SqliteDatabase"]


def _is_memory(database: str | None) -> bool:
    return bool(database) and (database == ":memory:" or "mode=memory" in str(database))


class SqliteDatabase(AsyncDatabase, peewee.SqliteDatabase):
    """SQLite through aiosqlite, pooled.

    Takes peewee's arguments (``pragmas``, ``lock_type``, ...) plus the pool options
    ``max_connections``, ``min_connections``, ``stale_timeout``, ``timeout`` and
    ``connect_timeout``. A ``:memory:`` database lives in one connection, so the pool
    holds exactly one, never closed for age: every task shares that database.
    """

    def _make_driver(self) -> SqliteDriver:
        return SqliteDriver(self.database, dict(self.connect_params),
                            pragmas=list(self._pragmas), functions=self._functions)

    def register_function(self, fn: Any, name: str | None = None, num_params: int = -1,
                          deterministic: bool = False) -> None:
        """As peewee's; every pooled connection gets it before its next statement."""
        self._functions[name or fn.__name__] = (fn, num_params, deterministic)

    def _validate_options(self) -> None:
        # peewee sets _functions after init(); aiosqlite validates at connect.
        pass

    def _pool_limits(self) -> dict[str, Any]:
        limits = super()._pool_limits()
        if _is_memory(self.database):
            limits.update(max_connections=1, min_connections=0, stale_timeout=None)
        return limits

    async def _begin_on(self, entry: Any, isolation_level: str | None,
                        lock_type: str | None) -> None:
        await entry.conn.begin(isolation_level, lock_type or self._lock_type)

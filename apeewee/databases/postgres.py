"""apeewee.PostgresqlDatabase: peewee's PostgresqlDatabase over asyncpg."""

from __future__ import annotations

from typing import Any

import peewee

from ..drivers.postgres import PostgresDriver, check_isolation_level
from .base import AsyncDatabase

__all__ = ["PostgresqlDatabase"]


class PostgresqlDatabase(AsyncDatabase, peewee.PostgresqlDatabase):
    """PostgreSQL through asyncpg, pooled, with prepared statements cached per connection.

    Takes peewee's arguments (``host``, ``port``, ``user``, ``password``,
    ``isolation_level``, ...) and asyncpg's connection options, plus the pool options.
    ``statement_cache_size`` (default 256) bounds the prepared statements kept per
    connection; 0 prepares every statement anew.
    """

    def init(self, database: str | None, *, isolation_level: str | None = None,
             statement_cache_size: int = 256, **kwargs: Any) -> None:
        # peewee maps isolation levels through psycopg's constants; asyncpg needs none.
        self._pg_isolation_level = (check_isolation_level(isolation_level)
                                    if isolation_level is not None else None)
        self._statement_cache_size = int(statement_cache_size)
        super().init(database, **kwargs)

    def _make_driver(self) -> PostgresDriver:
        params = dict(self.connect_params)
        params.pop("register_unicode", None)
        params.pop("encoding", None)
        params.pop("prefer_psycopg3", None)
        return PostgresDriver(
            self.database, params,
            connect_timeout=self._pool_options["connect_timeout"],
            statement_cache_size=self._statement_cache_size,
            isolation_level=self._pg_isolation_level,
        )

    def _learn_server(self, conn: Any) -> None:
        version = conn.raw.get_server_version()
        self.server_version = version.major * 10000 + version.minor

    async def _begin_on(self, entry: Any, isolation_level: str | None,
                        lock_type: str | None) -> None:
        await entry.conn.begin(isolation_level)



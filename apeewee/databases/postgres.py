"""apeewee.PostgresqlDatabase: peewee's PostgresqlDatabase over asyncpg."""

from __future__ import annotations

from typing import Any

import peewee

from ..drivers.postgres import PostgresDriver, check_isolation_level
from .base import AsyncDatabase

__all__ = ["PostgresqlDatabase"]

# Column types that are not cast targets, and the type to cast to instead.
_CASTABLE = {"SERIAL": "INTEGER", "BIGSERIAL": "BIGINT", "SMALLSERIAL": "SMALLINT"}


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

    def get_binary_type(self) -> type:
        """BlobField values go to the driver as plain bytes (peewee's default is psycopg's)."""
        return bytes

    def case_value(self, field: peewee.Field, value: Any) -> Any:
        """Cast a CASE branch value to its column type: the server types parameters."""
        value = field.case_value(value)
        if not isinstance(value, peewee.Value) or value.value is None:
            return value  # already typed by peewee (e.g. a JSON cast), or NULL
        type_name = self._field_types.get(field.field_type, field.field_type)
        type_name = _CASTABLE.get(type_name, type_name)
        return peewee.Cast(value, type_name)

    def _learn_server(self, conn: Any) -> None:
        version = conn.raw.get_server_version()
        self.server_version = version.major * 10000 + version.minor

    async def _begin_on(self, entry: Any, isolation_level: str | None,
                        lock_type: str | None) -> None:
        await entry.conn.begin(isolation_level)



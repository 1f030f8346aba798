"""apeewee.MySQLDatabase: peewee's MySQLDatabase over aiomysql (MySQL and MariaDB)."""

from __future__ import annotations

from typing import Any

import peewee

from ..drivers.mysql import MySQLDriver
from ..drivers.postgres import check_isolation_level
from .base import AsyncDatabase

__all__ = ["MySQLDatabase"]


class MySQLDatabase(AsyncDatabase, peewee.MySQLDatabase):
    """MySQL / MariaDB through aiomysql, pooled, autocommit on outside transactions.

    Takes peewee's arguments (``host``, ``port``, ``user``, ``password``, ``charset``,
    ``isolation_level``, ...) and aiomysql's connection options, plus the pool options.
    """

    def init(self, database: str | None, *, isolation_level: str | None = None,
             **kwargs: Any) -> None:
        self._my_isolation_level = (check_isolation_level(isolation_level)
                                    if isolation_level is not None else None)
        super().init(database, **kwargs)

    def _make_driver(self) -> MySQLDriver:
        return MySQLDriver(self.database, dict(self.connect_params),
                           connect_timeout=self._pool_options["connect_timeout"],
                           isolation_level=self._my_isolation_level)

    def get_binary_type(self) -> type:
        """BlobField values go to the driver as plain bytes (peewee's default is psycopg's)."""
        return bytes

    def _learn_server(self, conn: Any) -> None:
        self._set_server_version(conn.raw)

    async def _begin_on(self, entry: Any, isolation_level: str | None,
                        lock_type: str | None) -> None:
        await entry.conn.begin(isolation_level)

"""Plain synchronous peewee with playhouse.pool, called from asyncio through a thread
pool (loop.run_in_executor): what an async application does without an async ORM.

Drivers: psycopg2 / pymysql / sqlite3. One executor thread per pooled connection;
each operation runs inside `db.connection_context()` (connection back to the pool
afterwards, as a request handler would).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

from peewee import CharField, DateTimeField, IntegerField, Model
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

from ..workload import POOL_SIZE, SELECT_LIMIT, TABLE
from .base import System


class PeeweeSyncSystem(System):
    stream_note = "q.tuples().iterator() in one executor call (driver buffers the result)"

    async def setup(self, info: dict[str, Any], pool_size: int = POOL_SIZE) -> None:
        backend = info["backend"]
        # peewee imports drivers lazily; import here so a missing one reads as skipped
        if backend == "postgres":
            import psycopg2  # noqa: F401

            db = PooledPostgresqlDatabase(
                info["database"],
                host=info["host"],
                port=info["port"],
                user=info["user"],
                password=info["password"] or None,
                max_connections=pool_size,
                timeout=30,
            )
        elif backend == "mysql":
            import pymysql  # noqa: F401

            db = PooledMySQLDatabase(
                info["database"],
                host=info["host"],
                port=info["port"],
                user=info["user"],
                password=info["password"],
                max_connections=pool_size,
                timeout=30,
            )
        else:
            db = PooledSqliteDatabase(
                info["path"], max_connections=pool_size, timeout=30, check_same_thread=False
            )

        class Item(Model):
            name = CharField()
            value = IntegerField()
            created = DateTimeField()

            class Meta:
                database = db
                table_name = TABLE

        self.db = db
        self.Item = Item
        self.executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="peewee")
        self.loop = asyncio.get_running_loop()

    async def teardown(self) -> None:
        self.executor.shutdown(wait=True)
        self.db.close_all()

    def _run(self, fn: Any, *args: Any) -> Any:
        return self.loop.run_in_executor(self.executor, partial(self._in_context, fn, *args))

    def _in_context(self, fn: Any, *args: Any) -> Any:
        with self.db.connection_context():
            return fn(*args)

    # -- the sync bodies ---------------------------------------------------------------

    def _select_100(self, min_value: int) -> list[Any]:
        Item = self.Item
        return list(Item.select().where(Item.value > min_value).order_by(Item.id).limit(SELECT_LIMIT))

    def _insert(self, name: str, value: int, created: datetime) -> int:
        return self.Item.insert(name=name, value=value, created=created).execute()

    def _update(self, pk: int, value: int) -> int:
        Item = self.Item
        return Item.update(value=value).where(Item.id == pk).execute()

    def _transaction(self, name: str, value: int, created: datetime, pk: int, new: int) -> Any:
        Item = self.Item
        with self.db.atomic():
            Item.insert(name=name, value=value, created=created).execute()
            Item.update(value=new).where(Item.id == pk).execute()
            return Item.get_by_id(pk)

    def _count(self, lo: int, hi: int) -> int:
        Item = self.Item
        return Item.select().where(Item.id.between(lo, hi)).count()

    def _stream(self, limit: int) -> int:
        Item = self.Item
        n = 0
        for _row in Item.select().where(Item.id <= limit).tuples().iterator():
            n += 1
        return n

    def _load(self, limit: int) -> list[Any]:
        Item = self.Item
        return list(Item.select().where(Item.id <= limit))

    # -- the async interface -----------------------------------------------------------

    async def get_by_pk(self, pk: int) -> Any:
        return await self._run(self.Item.get_by_id, pk)

    async def select_100(self, min_value: int) -> list[Any]:
        return await self._run(self._select_100, min_value)

    async def insert(self, name: str, value: int, created: datetime) -> int:
        return await self._run(self._insert, name, value, created)

    async def update(self, pk: int, value: int) -> int:
        return await self._run(self._update, pk, value)

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        return await self._run(self._transaction, name, value, created, pk, new_value)

    async def count(self, lo: int, hi: int) -> int:
        return await self._run(self._count, lo, hi)

    async def stream(self, limit: int) -> int:
        return await self._run(self._stream, limit)

    async def load_10k(self, limit: int) -> list[Any]:
        return await self._run(self._load, limit)

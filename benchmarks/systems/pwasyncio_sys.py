"""peewee's own asyncio layer (playhouse.pwasyncio, peewee >= 4.5): sync peewee run in
greenlets over aiosqlite / asyncpg / aiomysql.

pwasyncio binds a connection to the asyncio *task* and keeps it until the task ends.
The benchmark's worker tasks are long-lived, so every operation is wrapped in the
documented unit-of-work idiom `async with db:`, which acquires a connection and
releases it on exit (as a request handler would).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from peewee import CharField, DateTimeField, IntegerField
from playhouse.pwasyncio import (
    AsyncMySQLDatabase,
    AsyncPostgresqlDatabase,
    AsyncSqliteDatabase,
)

from ..workload import POOL_SIZE, SELECT_LIMIT, STREAM_BATCH, TABLE
from .base import System


class PwAsyncioSystem(System):
    stream_note = f"db.iterate(q.tuples(), buffer_size={STREAM_BATCH})"

    async def setup(self, info: dict[str, Any], pool_size: int = POOL_SIZE) -> None:
        backend = info["backend"]
        if backend == "postgres":
            db = AsyncPostgresqlDatabase(
                info["database"],
                host=info["host"],
                port=info["port"],
                user=info["user"],
                password=info["password"] or None,
                pool_size=pool_size,
                pool_min_size=pool_size,
            )
        elif backend == "mysql":
            db = AsyncMySQLDatabase(
                info["database"],
                host=info["host"],
                port=info["port"],
                user=info["user"],
                password=info["password"],
                pool_size=pool_size,
                pool_min_size=pool_size,
            )
        else:
            db = AsyncSqliteDatabase(info["path"], pool_size=pool_size)

        class Item(db.Model):
            name = CharField()
            value = IntegerField()
            created = DateTimeField()

            class Meta:
                table_name = TABLE

        self.db = db
        self.Item = Item

    async def teardown(self) -> None:
        await self.db.close_pool()

    async def get_by_pk(self, pk: int) -> Any:
        async with self.db:
            return await self.Item.aget_by_id(pk)

    async def select_100(self, min_value: int) -> list[Any]:
        Item = self.Item
        query = Item.select().where(Item.value > min_value).order_by(Item.id).limit(SELECT_LIMIT)
        async with self.db:
            return await self.db.list(query)

    async def insert(self, name: str, value: int, created: datetime) -> int:
        async with self.db:
            return await self.db.aexecute(self.Item.insert(name=name, value=value, created=created))

    async def update(self, pk: int, value: int) -> int:
        Item = self.Item
        async with self.db:
            return await self.db.aexecute(Item.update(value=value).where(Item.id == pk))

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        Item, db = self.Item, self.db
        async with db, db.atomic():
            await db.aexecute(Item.insert(name=name, value=value, created=created))
            await db.aexecute(Item.update(value=new_value).where(Item.id == pk))
            return await Item.aget_by_id(pk)

    async def count(self, lo: int, hi: int) -> int:
        Item = self.Item
        async with self.db:
            return await self.db.count(Item.select().where(Item.id.between(lo, hi)))

    async def stream(self, limit: int) -> int:
        Item = self.Item
        n = 0
        query = Item.select().where(Item.id <= limit).tuples()
        async with self.db:
            async for _row in self.db.iterate(query, buffer_size=STREAM_BATCH):
                n += 1
        return n

    async def load_10k(self, limit: int) -> list[Any]:
        Item = self.Item
        async with self.db:
            return await self.db.list(Item.select().where(Item.id <= limit))

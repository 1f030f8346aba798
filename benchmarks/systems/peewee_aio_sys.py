"""peewee-aio: peewee query building on top of aio-databases (asyncpg / aiomysql pools;
aiosqlite without a pool: aio-databases opens a new sqlite connection per checkout)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from peewee import CharField, DateTimeField, IntegerField
from peewee_aio import Manager

from ..workload import POOL_SIZE, SELECT_LIMIT, TABLE
from .base import System, mysql_dsn, pg_dsn


class PeeweeAioSystem(System):
    stream_note = "async for over q.tuples() (asyncpg cursor; mysql/sqlite: buffered cursor)"

    async def setup(self, info: dict[str, Any], pool_size: int = POOL_SIZE) -> None:
        backend = info["backend"]
        if backend == "postgres":
            manager = Manager(pg_dsn(info, "asyncpg+pool"), min_size=pool_size, max_size=pool_size)
        elif backend == "mysql":
            # autocommit=True is required: aiomysql defaults to autocommit off, and then
            # writes outside a transaction are never committed (the pool closes the
            # connection "in transaction" on release, and drains under load)
            manager = Manager(
                mysql_dsn(info, "aiomysql+pool"),
                minsize=pool_size,
                maxsize=pool_size,
                autocommit=True,
            )
        else:
            manager = Manager(f"aiosqlite:///{info['path']}")

        class Item(manager.Model):
            name = CharField()
            value = IntegerField()
            created = DateTimeField()

            class Meta:
                table_name = TABLE

        self.manager = manager
        self.Item = Item
        await manager.connect()

    async def teardown(self) -> None:
        await self.manager.disconnect()

    async def get_by_pk(self, pk: int) -> Any:
        return await self.Item.get_by_id(pk)

    async def select_100(self, min_value: int) -> list[Any]:
        Item = self.Item
        return await Item.select().where(Item.value > min_value).order_by(Item.id).limit(SELECT_LIMIT)

    async def insert(self, name: str, value: int, created: datetime) -> int:
        # `await Item.insert(...)` returns the RETURNING rows on postgres but the row id
        # elsewhere; create() is the portable way to get the primary key back
        return (await self.Item.create(name=name, value=value, created=created)).id

    async def update(self, pk: int, value: int) -> int:
        Item = self.Item
        return await Item.update(value=value).where(Item.id == pk)

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        Item = self.Item
        async with self.manager.transaction():
            await Item.insert(name=name, value=value, created=created)
            await Item.update(value=new_value).where(Item.id == pk)
            return await Item.get_by_id(pk)

    async def count(self, lo: int, hi: int) -> int:
        Item = self.Item
        return await Item.select().where(Item.id.between(lo, hi)).count()

    async def stream(self, limit: int) -> int:
        Item = self.Item
        n = 0
        async for _row in Item.select().where(Item.id <= limit).tuples():
            n += 1
        return n

    async def load_10k(self, limit: int) -> list[Any]:
        Item = self.Item
        return await Item.select().where(Item.id <= limit)

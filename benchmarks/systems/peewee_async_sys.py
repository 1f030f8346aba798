"""peewee-async 2.x: AioModel + aio_* methods over aiopg (postgres) / aiomysql /
aiosqlite (no pool: a new sqlite connection per checkout).

peewee-async pins peewee<4.4, so this module only runs inside the separate virtual
environment made by `python -m benchmarks --with-peewee-async`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import peewee_async
from peewee import CharField, DateTimeField, IntegerField

from ..workload import POOL_SIZE, SELECT_LIMIT, TABLE
from .base import System


class PeeweeAsyncSystem(System):
    stream_note = "no streaming API: await q.tuples().aio_execute(), then iterate"

    async def setup(self, info: dict[str, Any], pool_size: int = POOL_SIZE) -> None:
        backend = info["backend"]
        if backend == "postgres":
            db = peewee_async.PostgresqlDatabase(
                info["database"],
                host=info["host"],
                port=info["port"],
                user=info["user"],
                password=info["password"],
                pool_params={"minsize": pool_size, "maxsize": pool_size},
            )
        elif backend == "mysql":
            db = peewee_async.MySQLDatabase(
                info["database"],
                host=info["host"],
                port=info["port"],
                user=info["user"],
                password=info["password"],
                pool_params={"minsize": pool_size, "maxsize": pool_size},
            )
        else:
            db = peewee_async.SqliteDatabase(info["path"])

        class Item(peewee_async.AioModel):
            name = CharField()
            value = IntegerField()
            created = DateTimeField()

            class Meta:
                database = db
                table_name = TABLE

        self.db = db
        self.Item = Item
        await db.aio_connect()

    async def teardown(self) -> None:
        await self.db.aio_close()

    async def get_by_pk(self, pk: int) -> Any:
        Item = self.Item
        return await Item.aio_get(Item.id == pk)

    async def select_100(self, min_value: int) -> list[Any]:
        Item = self.Item
        query = Item.select().where(Item.value > min_value).order_by(Item.id).limit(SELECT_LIMIT)
        return await query.aio_execute()

    async def insert(self, name: str, value: int, created: datetime) -> int:
        return await self.Item.insert(name=name, value=value, created=created).aio_execute()

    async def update(self, pk: int, value: int) -> int:
        Item = self.Item
        return await Item.update(value=value).where(Item.id == pk).aio_execute()

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        Item = self.Item
        async with self.db.aio_atomic():
            await Item.insert(name=name, value=value, created=created).aio_execute()
            await Item.update(value=new_value).where(Item.id == pk).aio_execute()
            return await Item.aio_get(Item.id == pk)

    async def count(self, lo: int, hi: int) -> int:
        Item = self.Item
        return await Item.select().where(Item.id.between(lo, hi)).aio_count()

    async def stream(self, limit: int) -> int:
        Item = self.Item
        n = 0
        for _row in await Item.select().where(Item.id <= limit).tuples().aio_execute():
            n += 1
        return n

    async def load_10k(self, limit: int) -> list[Any]:
        Item = self.Item
        return await Item.select().where(Item.id <= limit).aio_execute()

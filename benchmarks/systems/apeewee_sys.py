"""apeewee: peewee models, one asyncio pool, awaitable queries (the system under test)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from peewee import CharField, DateTimeField, IntegerField

# `import apeewee` alone can succeed on a half-built tree (namespace package), so import
# the names the benchmark needs: a missing one is an ImportError, reported as skipped.
from apeewee import MySQLDatabase, PostgresqlDatabase, SqliteDatabase

from ..workload import POOL_SIZE, SELECT_LIMIT, TABLE
from .base import System


class ApeeweeSystem(System):
    stream_note = "async for over .tuples()"

    async def setup(self, info: dict[str, Any], pool_size: int = POOL_SIZE) -> None:
        backend = info["backend"]
        if backend == "postgres":
            db = PostgresqlDatabase(
                info["database"],
                host=info["host"],
                port=info["port"],
                user=info["user"],
                password=info["password"] or None,
                max_connections=pool_size,
            )
        elif backend == "mysql":
            db = MySQLDatabase(
                info["database"],
                host=info["host"],
                port=info["port"],
                user=info["user"],
                password=info["password"],
                max_connections=pool_size,
            )
        else:
            db = SqliteDatabase(info["path"], max_connections=pool_size)

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
        return await self.Item.aget_by_id(pk)

    async def select_100(self, min_value: int) -> list[Any]:
        Item = self.Item
        return await Item.aselect().where(Item.value > min_value).order_by(Item.id).limit(SELECT_LIMIT)

    async def insert(self, name: str, value: int, created: datetime) -> int:
        return await self.Item.ainsert(name=name, value=value, created=created)

    async def update(self, pk: int, value: int) -> int:
        Item = self.Item
        return await Item.aupdate(value=value).where(Item.id == pk)

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        Item = self.Item
        async with self.db.atomic():
            await Item.ainsert(name=name, value=value, created=created)
            await Item.aupdate(value=new_value).where(Item.id == pk)
            return await Item.aget_by_id(pk)

    async def count(self, lo: int, hi: int) -> int:
        Item = self.Item
        return await Item.aselect().where(Item.id.between(lo, hi)).acount()

    async def stream(self, limit: int) -> int:
        Item = self.Item
        n = 0
        async for _row in Item.aselect().where(Item.id <= limit).tuples():
            n += 1
        return n

    async def load_10k(self, limit: int) -> list[Any]:
        Item = self.Item
        return await Item.aselect().where(Item.id <= limit)

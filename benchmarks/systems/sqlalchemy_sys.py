"""SQLAlchemy 2 asyncio, as two systems: the ORM (AsyncSession per unit of work) and
Core (AsyncConnection per unit of work). Drivers: asyncpg / aiomysql / aiosqlite."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..workload import POOL_SIZE, SELECT_LIMIT, STREAM_BATCH, TABLE
from .base import System, mysql_dsn, pg_dsn


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = TABLE

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[int]
    created: Mapped[datetime]


item_table = Table(
    TABLE,
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("value", Integer, nullable=False),
    Column("created", DateTime, nullable=False),
)


def make_engine(info: dict[str, Any], pool_size: int) -> AsyncEngine:
    backend = info["backend"]
    if backend == "postgres":
        url = pg_dsn(info, "postgresql+asyncpg")
    elif backend == "mysql":
        url = mysql_dsn(info, "mysql+aiomysql")
    else:
        url = f"sqlite+aiosqlite:///{info['path']}"
    return create_async_engine(url, pool_size=pool_size, max_overflow=0)


class SqlAlchemyOrmSystem(System):
    stream_note = f"session.stream(select(cols)), yield_per={STREAM_BATCH}"

    async def setup(self, info: dict[str, Any], pool_size: int = POOL_SIZE) -> None:
        self.engine = make_engine(info, pool_size)
        # expire_on_commit=False: objects stay readable after the session closes
        self.Session = async_sessionmaker(self.engine, expire_on_commit=False)

    async def teardown(self) -> None:
        await self.engine.dispose()

    async def get_by_pk(self, pk: int) -> Any:
        async with self.Session() as session:
            return await session.get(Item, pk)

    async def select_100(self, min_value: int) -> list[Any]:
        stmt = select(Item).where(Item.value > min_value).order_by(Item.id).limit(SELECT_LIMIT)
        async with self.Session() as session:
            return list((await session.scalars(stmt)).all())

    async def insert(self, name: str, value: int, created: datetime) -> int:
        item = Item(name=name, value=value, created=created)
        async with self.Session.begin() as session:
            session.add(item)
        return item.id

    async def update(self, pk: int, value: int) -> int:
        stmt = update(Item).where(Item.id == pk).values(value=value)
        async with self.Session.begin() as session:
            return (await session.execute(stmt)).rowcount

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        async with self.Session.begin() as session:
            session.add(Item(name=name, value=value, created=created))
            await session.flush()
            await session.execute(update(Item).where(Item.id == pk).values(value=new_value))
            return await session.get(Item, pk)

    async def count(self, lo: int, hi: int) -> int:
        stmt = select(func.count()).select_from(Item).where(Item.id.between(lo, hi))
        async with self.Session() as session:
            return await session.scalar(stmt)

    async def stream(self, limit: int) -> int:
        stmt = (
            select(Item.id, Item.name, Item.value, Item.created)
            .where(Item.id <= limit)
            .execution_options(yield_per=STREAM_BATCH)
        )
        n = 0
        async with self.Session() as session:
            async for _row in await session.stream(stmt):
                n += 1
        return n

    async def load_10k(self, limit: int) -> list[Any]:
        async with self.Session() as session:
            return list((await session.scalars(select(Item).where(Item.id <= limit))).all())


class SqlAlchemyCoreSystem(System):
    stream_note = f"conn.stream(select(table)), yield_per={STREAM_BATCH}"

    async def setup(self, info: dict[str, Any], pool_size: int = POOL_SIZE) -> None:
        self.engine = make_engine(info, pool_size)

    async def teardown(self) -> None:
        await self.engine.dispose()

    async def get_by_pk(self, pk: int) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(item_table).where(item_table.c.id == pk))).one()

    async def select_100(self, min_value: int) -> list[Any]:
        t = item_table
        stmt = select(t).where(t.c.value > min_value).order_by(t.c.id).limit(SELECT_LIMIT)
        async with self.engine.connect() as conn:
            return list((await conn.execute(stmt)).all())

    async def insert(self, name: str, value: int, created: datetime) -> int:
        stmt = insert(item_table).values(name=name, value=value, created=created)
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).inserted_primary_key[0]

    async def update(self, pk: int, value: int) -> int:
        t = item_table
        async with self.engine.begin() as conn:
            return (await conn.execute(update(t).where(t.c.id == pk).values(value=value))).rowcount

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        t = item_table
        async with self.engine.begin() as conn:
            await conn.execute(insert(t).values(name=name, value=value, created=created))
            await conn.execute(update(t).where(t.c.id == pk).values(value=new_value))
            return (await conn.execute(select(t).where(t.c.id == pk))).one()

    async def count(self, lo: int, hi: int) -> int:
        t = item_table
        stmt = select(func.count()).select_from(t).where(t.c.id.between(lo, hi))
        async with self.engine.connect() as conn:
            return await conn.scalar(stmt)

    async def stream(self, limit: int) -> int:
        stmt = (
            select(item_table).where(item_table.c.id <= limit).execution_options(yield_per=STREAM_BATCH)
        )
        n = 0
        async with self.engine.connect() as conn:
            async for _row in await conn.stream(stmt):
                n += 1
        return n

    async def load_10k(self, limit: int) -> list[Any]:
        async with self.engine.connect() as conn:
            stmt = select(item_table).where(item_table.c.id <= limit)
            return list((await conn.execute(stmt)).all())

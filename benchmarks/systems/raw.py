"""The floor: hand-written SQL on the bare async driver, driver rows instead of models.

asyncpg pool / aiomysql pool / a queue of aiosqlite connections. Each backend has its
own small class; RawSystem binds the right one's methods onto itself at setup, so a
measured call is exactly one driver round trip with no forwarding layer.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from ..workload import POOL_SIZE, SELECT_LIMIT, STREAM_BATCH, TABLE
from .base import System

COLS = "id, name, value, created"
OPS = ("get_by_pk", "select_100", "insert", "update", "transaction", "count", "stream", "load_10k")


class RawSystem(System):
    stream_note = f"server-side cursor, batches of {STREAM_BATCH}"

    async def setup(self, info: dict[str, Any], pool_size: int = POOL_SIZE) -> None:
        impl_cls = {"postgres": _Postgres, "mysql": _MySQL, "sqlite": _Sqlite}[info["backend"]]
        self._impl = impl_cls()
        await self._impl.setup(info, pool_size)
        for op in OPS:
            setattr(self, op, getattr(self._impl, op))

    async def teardown(self) -> None:
        await self._impl.teardown()


async def _no_reset(conn: Any) -> None:
    return None


class _Postgres:
    async def setup(self, info: dict[str, Any], pool_size: int) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(
            host=info["host"],
            port=info["port"],
            user=info["user"],
            password=info["password"] or None,
            database=info["database"],
            min_size=pool_size,
            max_size=pool_size,
            # asyncpg's default reset (RESET ALL, UNLISTEN, ...) costs a round trip per
            # release; the workload leaves no session state, so the floor skips it
            reset=_no_reset,
        )

    async def teardown(self) -> None:
        await self.pool.close()

    async def get_by_pk(self, pk: int) -> Any:
        return await self.pool.fetchrow(f"SELECT {COLS} FROM {TABLE} WHERE id = $1", pk)

    async def select_100(self, min_value: int) -> list[Any]:
        sql = f"SELECT {COLS} FROM {TABLE} WHERE value > $1 ORDER BY id LIMIT {SELECT_LIMIT}"
        return await self.pool.fetch(sql, min_value)

    async def insert(self, name: str, value: int, created: datetime) -> int:
        sql = f"INSERT INTO {TABLE} (name, value, created) VALUES ($1, $2, $3) RETURNING id"
        return await self.pool.fetchval(sql, name, value, created)

    async def update(self, pk: int, value: int) -> int:
        status = await self.pool.execute(f"UPDATE {TABLE} SET value = $1 WHERE id = $2", value, pk)
        return int(status.rsplit(" ", 1)[1])

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.fetchval(
                f"INSERT INTO {TABLE} (name, value, created) VALUES ($1, $2, $3) RETURNING id",
                name,
                value,
                created,
            )
            await conn.execute(f"UPDATE {TABLE} SET value = $1 WHERE id = $2", new_value, pk)
            return await conn.fetchrow(f"SELECT {COLS} FROM {TABLE} WHERE id = $1", pk)

    async def count(self, lo: int, hi: int) -> int:
        sql = f"SELECT count(*) FROM {TABLE} WHERE id BETWEEN $1 AND $2"
        return await self.pool.fetchval(sql, lo, hi)

    async def stream(self, limit: int) -> int:
        n = 0
        async with self.pool.acquire() as conn, conn.transaction():
            sql = f"SELECT {COLS} FROM {TABLE} WHERE id <= $1"
            async for _row in conn.cursor(sql, limit, prefetch=STREAM_BATCH):
                n += 1
        return n

    async def load_10k(self, limit: int) -> list[Any]:
        return await self.pool.fetch(f"SELECT {COLS} FROM {TABLE} WHERE id <= $1", limit)


class _MySQL:
    async def setup(self, info: dict[str, Any], pool_size: int) -> None:
        import aiomysql

        self._sscursor = aiomysql.SSCursor
        self.pool = await aiomysql.create_pool(
            host=info["host"],
            port=info["port"],
            user=info["user"],
            password=info["password"],
            db=info["database"],
            minsize=pool_size,
            maxsize=pool_size,
            autocommit=True,
        )

    async def teardown(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()

    async def _fetchall(self, sql: str, args: tuple) -> Any:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql, args)
            return await cur.fetchall()

    async def get_by_pk(self, pk: int) -> Any:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(f"SELECT {COLS} FROM {TABLE} WHERE id = %s", (pk,))
            return await cur.fetchone()

    async def select_100(self, min_value: int) -> list[Any]:
        sql = f"SELECT {COLS} FROM {TABLE} WHERE value > %s ORDER BY id LIMIT {SELECT_LIMIT}"
        return await self._fetchall(sql, (min_value,))

    async def insert(self, name: str, value: int, created: datetime) -> int:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            sql = f"INSERT INTO {TABLE} (name, value, created) VALUES (%s, %s, %s)"
            await cur.execute(sql, (name, value, created))
            return cur.lastrowid

    async def update(self, pk: int, value: int) -> int:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(f"UPDATE {TABLE} SET value = %s WHERE id = %s", (value, pk))
            return cur.rowcount

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        async with self.pool.acquire() as conn:
            await conn.begin()
            try:
                async with conn.cursor() as cur:
                    await cur.execute(
                        f"INSERT INTO {TABLE} (name, value, created) VALUES (%s, %s, %s)",
                        (name, value, created),
                    )
                    await cur.execute(f"UPDATE {TABLE} SET value = %s WHERE id = %s", (new_value, pk))
                    await cur.execute(f"SELECT {COLS} FROM {TABLE} WHERE id = %s", (pk,))
                    row = await cur.fetchone()
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
            return row

    async def count(self, lo: int, hi: int) -> int:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(f"SELECT count(*) FROM {TABLE} WHERE id BETWEEN %s AND %s", (lo, hi))
            return (await cur.fetchone())[0]

    async def stream(self, limit: int) -> int:
        n = 0
        async with self.pool.acquire() as conn, conn.cursor(self._sscursor) as cur:
            await cur.execute(f"SELECT {COLS} FROM {TABLE} WHERE id <= %s", (limit,))
            while rows := await cur.fetchmany(STREAM_BATCH):
                n += len(rows)
        return n

    async def load_10k(self, limit: int) -> list[Any]:
        return await self._fetchall(f"SELECT {COLS} FROM {TABLE} WHERE id <= %s", (limit,))


class _Sqlite:
    """aiosqlite has no pool: a fixed set of connections handed out through a queue."""

    async def setup(self, info: dict[str, Any], pool_size: int) -> None:
        import aiosqlite

        self._conns = [
            await aiosqlite.connect(info["path"], isolation_level=None) for _ in range(pool_size)
        ]
        self._free: asyncio.Queue = asyncio.Queue()
        for conn in self._conns:
            self._free.put_nowait(conn)

    async def teardown(self) -> None:
        for conn in self._conns:
            await conn.close()

    async def _fetchall(self, sql: str, args: tuple) -> Any:
        conn = await self._free.get()
        try:
            return await conn.execute_fetchall(sql, args)
        finally:
            self._free.put_nowait(conn)

    async def get_by_pk(self, pk: int) -> Any:
        rows = await self._fetchall(f"SELECT {COLS} FROM {TABLE} WHERE id = ?", (pk,))
        return rows[0]

    async def select_100(self, min_value: int) -> list[Any]:
        sql = f"SELECT {COLS} FROM {TABLE} WHERE value > ? ORDER BY id LIMIT {SELECT_LIMIT}"
        return await self._fetchall(sql, (min_value,))

    async def insert(self, name: str, value: int, created: datetime) -> int:
        conn = await self._free.get()
        try:
            cur = await conn.execute(
                f"INSERT INTO {TABLE} (name, value, created) VALUES (?, ?, ?)",
                (name, value, created.isoformat(" ", "microseconds")),
            )
            return cur.lastrowid
        finally:
            self._free.put_nowait(conn)

    async def update(self, pk: int, value: int) -> int:
        conn = await self._free.get()
        try:
            cur = await conn.execute(f"UPDATE {TABLE} SET value = ? WHERE id = ?", (value, pk))
            return cur.rowcount
        finally:
            self._free.put_nowait(conn)

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        conn = await self._free.get()
        try:
            await conn.execute("BEGIN")
            try:
                await conn.execute(
                    f"INSERT INTO {TABLE} (name, value, created) VALUES (?, ?, ?)",
                    (name, value, created.isoformat(" ", "microseconds")),
                )
                await conn.execute(f"UPDATE {TABLE} SET value = ? WHERE id = ?", (new_value, pk))
                rows = await conn.execute_fetchall(f"SELECT {COLS} FROM {TABLE} WHERE id = ?", (pk,))
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            return rows[0]
        finally:
            self._free.put_nowait(conn)

    async def count(self, lo: int, hi: int) -> int:
        sql = f"SELECT count(*) FROM {TABLE} WHERE id BETWEEN ? AND ?"
        return (await self._fetchall(sql, (lo, hi)))[0][0]

    async def stream(self, limit: int) -> int:
        n = 0
        conn = await self._free.get()
        try:
            cur = await conn.execute(f"SELECT {COLS} FROM {TABLE} WHERE id <= ?", (limit,))
            while rows := await cur.fetchmany(STREAM_BATCH):
                n += len(rows)
            await cur.close()
        finally:
            self._free.put_nowait(conn)
        return n

    async def load_10k(self, limit: int) -> list[Any]:
        return await self._fetchall(f"SELECT {COLS} FROM {TABLE} WHERE id <= ?", (limit,))

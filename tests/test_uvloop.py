"""apeewee under uvloop: queries, transactions, the pool and loop shutdown."""

from __future__ import annotations

import asyncio

import uvloop
from conftest import define_models, make_db


def test_workload_under_uvloop(backend, tmp_path):
    db = make_db(backend, tmp_path, max_connections=3)
    models = define_models(db)
    User = models.User

    async def main() -> tuple[int, int]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        await db.adrop_tables(models.all)
        await db.acreate_tables(models.all)

        async def work(i: int) -> None:
            async with db.atomic():
                await User.acreate(name=f"u{i}", age=i)
            await User.aget_by_id(1)

        await asyncio.gather(*(work(i) for i in range(30)))
        count = await User.aselect().acount()
        in_use = db.pool_stats().in_use
        await db.adrop_tables(models.all)
        return count, in_use

    assert uvloop.run(main()) == (30, 0)
    # A second loop (plain asyncio) reuses the database; the uvloop pool was closed
    # when its loop shut down.
    async def again() -> int:
        rows = await db.aexecute_sql("SELECT 1")
        await db.close_pool()
        return int(rows.fetchone()[0])

    assert asyncio.run(again()) == 1

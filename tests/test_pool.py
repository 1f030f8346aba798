"""The connection pool: options, lazy opening, FIFO waiters, timeouts, stats, closing,
event-loop changes and heavy concurrency, on every backend."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from typing import Any

import peewee
import pytest
from conftest import BACKENDS, make_db
from helpers import live_server_ids, server_conn_id, wait_gone, wait_until

import apeewee

SERVER_BACKENDS = [b for b in BACKENDS if b in ("postgres", "mysql")]


# -- options -----------------------------------------------------------------------------


async def test_defaults_and_lazy_open(db_factory):
    db = db_factory()
    stats = db.pool_stats()
    assert (stats.max, stats.min) == (20, 0)
    assert (stats.open, stats.idle, stats.in_use, stats.waiting) == (0, 0, 0, 0)
    assert stats["in_use"] == 0  # dict-style access too
    result = await db.aexecute_sql("SELECT 1")
    assert result.fetchone()[0] == 1
    stats = db.pool_stats()
    assert (stats.open, stats.idle, stats.in_use, stats.waiting) == (1, 1, 0, 0)
    assert stats.opened_total == 1
    # The idle connection is reused, not a new one opened.
    for _ in range(5):
        await db.aexecute_sql("SELECT 1")
    assert db.pool_stats().opened_total == 1


async def test_min_connections_lazy_then_filled_in_background(db_factory):
    db = db_factory(min_connections=3, max_connections=5)
    await asyncio.sleep(0.05)
    assert db.pool_stats().open == 0, "nothing may be opened before the first query"
    await db.aexecute_sql("SELECT 1")
    await wait_until(lambda: db.pool_stats().open >= 3, "min_connections to be opened")
    stats = db.pool_stats()
    assert stats.min == 3
    assert 3 <= stats.open <= 5
    assert stats.in_use == 0


async def test_min_connections_kept_after_stale_discards(db_factory):
    db = db_factory(min_connections=2, max_connections=4, stale_timeout=0.2)
    await db.aexecute_sql("SELECT 1")
    await wait_until(lambda: db.pool_stats().open >= 2, "min_connections to be opened")
    opened = db.pool_stats().opened_total
    await asyncio.sleep(0.3)  # every open connection is stale now
    await db.aexecute_sql("SELECT 1")
    await wait_until(lambda: db.pool_stats().opened_total >= opened + 2
                     and db.pool_stats().open >= 2, "fresh connections up to min_connections")
    stats = db.pool_stats()
    assert stats.discarded_total.get("stale", 0) >= 1
    assert stats.open <= 4


async def test_stale_connection_replaced_at_checkout(db_factory, backend):
    db = db_factory(stale_timeout=0.2)
    await db.aexecute_sql("SELECT 1")
    first_id = await server_conn_id(db, backend) if backend != "sqlite" else None
    assert db.pool_stats().opened_total == 1
    await asyncio.sleep(0.3)
    await db.aexecute_sql("SELECT 1")
    stats = db.pool_stats()
    assert stats.opened_total == 2
    assert stats.discarded_total.get("stale", 0) >= 1
    assert stats.open == 1
    if backend != "sqlite":
        assert await server_conn_id(db, backend) != first_id
        await wait_gone(backend, {first_id})


async def test_stale_connection_closed_at_checkin(db_factory):
    db = db_factory(stale_timeout=0.2)
    async with db.connection():
        await db.aexecute_sql("SELECT 1")
        await asyncio.sleep(0.3)
        await db.aexecute_sql("SELECT 1")  # still the pinned connection: not replaced mid-block
        assert db.pool_stats().opened_total == 1
    stats = db.pool_stats()
    assert stats.discarded_total.get("stale", 0) == 1
    assert (stats.open, stats.idle, stats.in_use) == (0, 0, 0)


async def test_pool_timeout(db_factory):
    db = db_factory(max_connections=1, timeout=0.2)
    async with db.connection():
        await db.aexecute_sql("SELECT 1")
        with pytest.raises(apeewee.PoolTimeout) as info:
            await asyncio.create_task(db.aexecute_sql("SELECT 1"))
        assert isinstance(info.value, peewee.OperationalError)
        message = str(info.value)
        assert "max_connections=1" in message
        assert "1 in use" in message
        stats = db.pool_stats()
        assert (stats.in_use, stats.waiting) == (1, 0)
        assert stats.timeouts_total == 1
    # The pool still works once the connection is back.
    assert (await db.aexecute_sql("SELECT 2")).fetchone()[0] == 2
    assert db.pool_stats().in_use == 0


async def test_waiters_served_first_in_first_out(db_factory):
    db = db_factory(max_connections=1, timeout=10)
    order: list[int] = []
    release = asyncio.Event()
    holding = asyncio.Event()

    async def holder() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            holding.set()
            await release.wait()

    async def waiter(i: int) -> None:
        if i % 2:
            async with db.connection():
                order.append(i)
                await db.aexecute_sql("SELECT 1")
        else:
            await db.aexecute_sql("SELECT 1")
            order.append(i)

    hold = asyncio.create_task(holder())
    await holding.wait()
    stats = db.pool_stats()
    assert (stats.open, stats.idle, stats.in_use, stats.waiting) == (1, 0, 1, 0)
    waiters = []
    for i in range(5):
        waiters.append(asyncio.create_task(waiter(i)))
        await wait_until(lambda n=i + 1: db.pool_stats().waiting == n, f"{i + 1} waiters")
    stats = db.pool_stats()
    assert (stats.open, stats.idle, stats.in_use, stats.waiting) == (1, 0, 1, 5)
    release.set()
    await asyncio.gather(hold, *waiters)
    assert order == [0, 1, 2, 3, 4]
    stats = db.pool_stats()
    assert (stats.open, stats.in_use, stats.waiting, stats.opened_total) == (1, 0, 0, 1)


async def test_cancelled_waiter_leaves_the_queue(db_factory):
    db = db_factory(max_connections=1, timeout=10)
    async with db.connection():
        waiter = asyncio.create_task(db.aexecute_sql("SELECT 1"))
        await wait_until(lambda: db.pool_stats().waiting == 1, "a waiter")
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert db.pool_stats().waiting == 0
    assert (await db.aexecute_sql("SELECT 3")).fetchone()[0] == 3
    assert db.pool_stats().in_use == 0


def test_invalid_pool_options_raise_value_error(backend, tmp_path):
    for bad in ({"max_connections": 0}, {"max_connections": -1},
                {"min_connections": 3, "max_connections": 2}, {"min_connections": -1},
                {"timeout": -1}, {"stale_timeout": -0.5}, {"connect_timeout": -1}):
        with pytest.raises(ValueError):
            make_db(backend, tmp_path, **bad)


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_unknown_connection_option_raises_type_error(backend, tmp_path):
    with pytest.raises(TypeError, match="no_such_option"):
        make_db(backend, tmp_path, no_such_option=1)


# -- stats, concurrency --------------------------------------------------------------------


async def test_many_tasks_share_a_small_pool(db_factory):
    db = db_factory(max_connections=3, timeout=30)
    samples: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def sampler() -> None:
        for _ in range(100_000):
            if done.is_set():
                return
            s = db.pool_stats()
            samples.append((s.open, s.in_use))
            await asyncio.sleep(0)

    async def work(i: int) -> int:
        first = (await db.aexecute_sql(f"SELECT {db.param} + 0", (i,))).fetchone()[0]
        async with db.connection():
            second = (await db.aexecute_sql(f"SELECT {db.param} + 0", (i * 2,))).fetchone()[0]
        return int(first) + int(second)

    await db.aexecute_sql("SELECT 1")  # one connection first (SQLite: it sets WAL mode)
    sample_task = asyncio.create_task(sampler())
    results = await asyncio.gather(*(work(i) for i in range(200)))
    done.set()
    await sample_task
    assert results == [3 * i for i in range(200)]
    assert len(samples) > 10
    assert max(o for o, _ in samples) <= 3
    assert max(u for _, u in samples) <= 3
    assert max(u for _, u in samples) >= 2, "the tasks should have run concurrently"
    stats = db.pool_stats()
    assert (stats.in_use, stats.waiting) == (0, 0)
    assert stats.open <= 3
    assert stats.opened_total <= 3


# -- closing -------------------------------------------------------------------------------


async def test_close_pool_closes_connections_and_reopens(db_factory, backend):
    db = db_factory(max_connections=5)
    await db.aexecute_sql("SELECT 1")  # one connection first (SQLite: it sets WAL mode)
    gate = asyncio.Event()
    ids: list[Any] = []

    async def hold() -> None:
        async with db.connection():
            if backend != "sqlite":
                ids.append(await server_conn_id(db, backend))
            else:
                await db.aexecute_sql("SELECT 1")
            await gate.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(3)]
    await wait_until(lambda: db.pool_stats().in_use == 3, "3 connections in use")
    gate.set()
    await asyncio.gather(*tasks)
    assert db.pool_stats().idle == 3
    await db.close_pool()
    assert db.pool_stats().open == 0
    if backend != "sqlite":
        assert len(set(ids)) == 3
        await wait_gone(backend, set(ids))
    # Later use reopens the pool.
    assert (await db.aexecute_sql("SELECT 7")).fetchone()[0] == 7
    stats = db.pool_stats()
    assert (stats.open, stats.opened_total) == (1, 1)


async def test_close_pool_waits_for_checked_out_connections(db_factory, backend):
    db = db_factory(max_connections=5)
    await db.aexecute_sql("SELECT 1")  # one connection first (SQLite: it sets WAL mode)
    held = asyncio.Event()
    give_back = asyncio.Event()
    ids: dict[str, Any] = {}

    async def idle_one() -> None:
        async with db.connection():
            if backend != "sqlite":
                ids["idle"] = await server_conn_id(db, backend)
            await held.wait()

    async def holder() -> None:
        async with db.connection():
            if backend != "sqlite":
                ids["held"] = await server_conn_id(db, backend)
            else:
                await db.aexecute_sql("SELECT 1")
            held.set()
            await give_back.wait()
            # Still usable while close_pool() waits for it.
            assert (await db.aexecute_sql("SELECT 5")).fetchone()[0] == 5

    hold_task = asyncio.create_task(holder())
    await idle_one()  # opens a second connection, returned idle once `held` is set
    assert db.pool_stats().idle == 1
    closer = asyncio.create_task(db.close_pool(timeout=5))
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert not closer.done(), "close_pool() must wait for the checked-out connection"
    if backend != "sqlite":
        await wait_gone(backend, {ids["idle"]})  # idle connections close at once
        assert await live_server_ids(backend, {ids["held"]}) == {ids["held"]}
    give_back.set()
    await hold_task
    await asyncio.wait_for(closer, 10)
    if backend != "sqlite":
        await wait_gone(backend, {ids["held"]})
    assert db.pool_stats().open == 0


async def test_close_pool_gives_up_on_holders_after_timeout(db_factory, backend):
    db = db_factory(max_connections=2)
    holding = asyncio.Event()
    closed = asyncio.Event()
    outcome: dict[str, Any] = {}

    async def holder() -> None:
        async with db.connection():
            if backend != "sqlite":
                outcome["id"] = await server_conn_id(db, backend)
            else:
                await db.aexecute_sql("SELECT 1")
            holding.set()
            await closed.wait()
            try:
                await db.aexecute_sql("SELECT 1")
            except peewee.PeeweeException as exc:
                outcome["error"] = exc

    threads_before = set(threading.enumerate())
    task = asyncio.create_task(holder())
    await holding.wait()
    conn_threads = set(threading.enumerate()) - threads_before
    await db.close_pool(timeout=0.2)
    if backend != "sqlite":
        await wait_gone(backend, {outcome["id"]})
    else:  # aiosqlite's connection thread ends when the connection is closed
        assert len(conn_threads) == 1
        await wait_until(lambda: not any(t.is_alive() for t in conn_threads),
                         "the connection's thread to end")
    closed.set()
    await task
    assert isinstance(outcome.get("error"), peewee.PeeweeException), \
        "a connection closed by close_pool() must not keep working"
    # A new pool serves new queries.
    assert (await db.aexecute_sql("SELECT 1")).fetchone()[0] == 1
    assert db.pool_stats().in_use == 0


# -- event loops ---------------------------------------------------------------------------


def test_database_survives_a_new_event_loop(backend, tmp_path):
    """Several asyncio.run() calls on one database, with and without close_pool() between."""
    db = make_db(backend, tmp_path, max_connections=2)

    class LoopItem(apeewee.Model):
        name = peewee.CharField(max_length=32)

        class Meta:
            database = db
            table_name = "ap_pool_loop_item"

    async def use(close: bool) -> list[str]:
        await db.aexecute_sql("SELECT 1")
        async with db.atomic():
            await LoopItem.acreate(name=f"item{await LoopItem.aselect().acount()}")
        names = [i.name for i in await LoopItem.aselect().order_by(LoopItem.id)]
        if close:
            await db.close_pool()
        return names

    async def setup() -> None:
        if await db.atable_exists(LoopItem._meta.table_name):
            await db.adrop_tables([LoopItem], safe=False)
        await db.acreate_tables([LoopItem], safe=False)
        await db.close_pool()

    async def teardown() -> None:
        await db.adrop_tables([LoopItem], safe=False)
        await db.close_pool()

    # Pools dropped with their loop may leak sockets (see the next test); that is not
    # what this test is about, so their ResourceWarnings are silenced here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        asyncio.run(setup())
        assert asyncio.run(use(close=True)) == ["item0"]
        assert asyncio.run(use(close=False)) == ["item0", "item1"]  # new loop, pool closed
        assert asyncio.run(use(close=False)) == ["item0", "item1", "item2"]  # pool not closed
        asyncio.run(teardown())
        gc.collect()


def test_pool_dropped_with_its_loop_closes_its_connections(backend, tmp_path):
    """A pool whose loop ended without close_pool() is dropped when the database is used
    from a new loop; its connections must really be closed then, not left to the GC
    (which would close the sockets with "unclosed transport" ResourceWarnings)."""
    db = make_db(backend, tmp_path, max_connections=3)
    first_ids: set[Any] = set()
    threads_before = set(threading.enumerate())

    async def first() -> None:
        await db.aexecute_sql("SELECT 1")  # one connection first: it sets WAL mode
        gate = asyncio.Event()

        async def hold() -> None:
            async with db.connection():
                if backend != "sqlite":
                    first_ids.add(await server_conn_id(db, backend))
                else:
                    await db.aexecute_sql("SELECT 1")
                await gate.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(2)]
        await wait_until(lambda: db.pool_stats().in_use == 2, "2 connections in use")
        gate.set()
        await asyncio.gather(*tasks)
        # The loop ends with two idle connections in the pool.

    async def second(first_threads: set[threading.Thread]) -> set[Any]:
        await db.aexecute_sql("SELECT 1")  # drops the first loop's pool
        alive: set[Any] = set()
        for _ in range(100):
            if backend == "sqlite":
                alive = {t.name for t in first_threads if t.is_alive()}
            else:
                alive = await live_server_ids(backend, first_ids)
            if not alive:
                break
            await asyncio.sleep(0.02)
        await db.close_pool()
        return alive

    gc.disable()  # the GC would eventually close leaked sockets; the pool must do it
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            asyncio.run(first())
            first_threads = set(threading.enumerate()) - threads_before
            # The pool is closed when its loop shuts down; an aiosqlite thread may still
            # be finishing, so the check below polls.
            if backend != "sqlite":
                assert len(first_ids) == 2
            alive = asyncio.run(second(first_threads))
            gc.enable()
            gc.collect()
    finally:
        gc.enable()
    assert alive == set(), f"connections of the dropped pool still open: {alive}"
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == [], f"the dropped pool's connections were left to the GC: {leaks}"


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_pool_closed_politely_when_asyncio_run_ends(backend, tmp_path):
    """No close_pool() call: the loop's shutdown closes the pool's connections."""
    db = make_db(backend, tmp_path, max_connections=3)
    ids: set[Any] = set()

    async def use() -> None:
        async def one() -> None:
            async with db.connection():
                ids.add(await server_conn_id(db, backend))
                await asyncio.sleep(0.05)

        await asyncio.gather(one(), one())

    asyncio.run(use())
    assert len(ids) == 2
    asyncio.run(wait_gone(backend, ids))

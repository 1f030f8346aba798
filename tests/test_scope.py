"""Task scopes: a pooled connection pinned to the current task for a block, aconnect /
aclose, per-query checkout outside blocks, and child tasks that must not share the
parent's connection or transaction."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import peewee
import pytest
from conftest import outside_count
from helpers import wait_until


async def mark(db: Any, backend: str) -> Any:
    """Identify the connection the next statement runs on: the PG backend pid or MySQL
    connection id; on SQLite a TEMP table of a unique name created on it."""
    if backend == "postgres":
        return (await db.aexecute_sql("SELECT pg_backend_pid()")).fetchone()[0]
    if backend == "mysql":
        return (await db.aexecute_sql("SELECT CONNECTION_ID()")).fetchone()[0]
    name = "ap_mark_" + uuid.uuid4().hex
    await db.aexecute_sql(f"CREATE TEMP TABLE {name} (x INTEGER)")
    return name


async def on_mark(db: Any, backend: str, marker: Any) -> bool:
    """Whether one statement, run now, runs on the connection ``marker`` identifies."""
    if backend == "sqlite":
        sql = f"SELECT COUNT(*) FROM sqlite_temp_master WHERE name = '{marker}'"
        return (await db.aexecute_sql(sql)).fetchone()[0] == 1
    return await mark(db, backend) == marker


async def warm(db: Any, n: int) -> None:
    """Open ``n`` connections (then idle), so a query not routed to the pinned connection
    would find another one."""
    await db.aexecute_sql("SELECT 1")  # the first connection alone (SQLite sets WAL mode)
    gate = asyncio.Event()

    async def hold() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            await gate.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(n)]
    await wait_until(lambda: db.pool_stats().in_use == n, f"{n} connections in use")
    gate.set()
    await asyncio.gather(*tasks)
    assert db.pool_stats().idle == n


# -- pinning -------------------------------------------------------------------------------


async def test_connection_block_pins_one_connection(backend, db, models):
    await warm(db, 3)
    assert db.is_closed()
    async with db.connection() as conn:
        assert not db.is_closed()
        marker = await mark(db, backend)
        assert db.pool_stats().in_use == 1
        for _ in range(5):
            assert await on_mark(db, backend, marker)
            await models.User.acreate(name=uuid.uuid4().hex[:16])
            assert await models.User.aselect().acount() >= 1
            assert db.pool_stats().in_use == 1
        # The Connection object runs on the same connection.
        if backend == "sqlite":
            sql = f"SELECT COUNT(*) FROM sqlite_temp_master WHERE name = '{marker}'"
            assert (await conn.aexecute_sql(sql)).fetchone()[0] == 1
        else:
            sql = "SELECT pg_backend_pid()" if backend == "postgres" else "SELECT CONNECTION_ID()"
            assert (await conn.aexecute_sql(sql)).fetchone()[0] == marker
        assert conn.raw is not None
    assert db.is_closed()
    assert db.pool_stats().in_use == 0
    assert db.pool_stats().idle == 3
    with pytest.raises(peewee.InterfaceError):
        await conn.aexecute_sql("SELECT 1")  # the connection was given back


async def test_connection_context_pins_and_decorates(backend, db):
    await warm(db, 2)
    async with db.connection_context():
        marker = await mark(db, backend)
        assert await on_mark(db, backend, marker)
        assert await on_mark(db, backend, marker)
        assert db.pool_stats().in_use == 1
    assert db.pool_stats().in_use == 0

    @db.connection_context()
    async def work(x: int) -> tuple[int, list[bool], int]:
        """docstring kept"""
        inner = await mark(db, backend)
        same = [await on_mark(db, backend, inner) for _ in range(3)]
        return x * 2, same, db.pool_stats().in_use

    assert work.__name__ == "work" and work.__doc__ == "docstring kept"
    assert await work(21) == (42, [True, True, True], 1)
    assert db.pool_stats().in_use == 0
    # Twice, and concurrently: each call pins its own connection.
    results = await asyncio.gather(work(1), work(2))
    assert [r[0] for r in results] == [2, 4]
    assert all(r[1] == [True, True, True] for r in results)
    assert db.pool_stats().in_use == 0

    with pytest.raises(TypeError):
        db.connection_context()(lambda: None)


async def test_nested_blocks_reuse_the_connection(backend, db):
    await warm(db, 2)
    async with db.connection():
        marker = await mark(db, backend)
        async with db.connection_context():
            assert await on_mark(db, backend, marker)
            async with db.connection():
                assert await on_mark(db, backend, marker)
                assert db.pool_stats().in_use == 1
            assert db.pool_stats().in_use == 1
            assert not db.is_closed()
            assert await on_mark(db, backend, marker)
        assert db.pool_stats().in_use == 1
        assert not db.is_closed()
        assert await on_mark(db, backend, marker)
    assert db.pool_stats().in_use == 0
    assert db.is_closed()


async def test_one_context_object_entered_by_two_tasks(backend, db):
    await warm(db, 2)
    ctx = db.connection()
    both_in = asyncio.Event()
    entered = 0
    markers: list[Any] = []

    async def use() -> bool:
        nonlocal entered
        async with ctx:
            marker = await mark(db, backend)
            markers.append(marker)
            entered += 1
            if entered == 2:
                both_in.set()
            await both_in.wait()
            return await on_mark(db, backend, marker)

    assert await asyncio.gather(use(), use()) == [True, True]
    assert markers[0] != markers[1]
    assert db.pool_stats().in_use == 0


async def test_connection_returned_on_error(backend, db):
    with pytest.raises(ZeroDivisionError):
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            assert db.pool_stats().in_use == 1
            1 / 0  # noqa: B018
    stats = db.pool_stats()
    assert (stats.in_use, stats.idle) == (0, 1)
    assert db.is_closed()
    # A failing statement inside the block too.
    with pytest.raises(peewee.DatabaseError):
        async with db.connection():
            await db.aexecute_sql("SELECT * FROM ap_no_such_table")
    assert db.pool_stats().in_use == 0
    assert (await db.aexecute_sql("SELECT 1")).fetchone()[0] == 1


async def test_connection_returned_on_cancellation(backend, db):
    entered = asyncio.Event()
    never = asyncio.Event()

    async def blocked() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            entered.set()
            await never.wait()

    task = asyncio.create_task(blocked())
    await entered.wait()
    assert db.pool_stats().in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.pool_stats().in_use == 0
    assert (await db.aexecute_sql("SELECT 1")).fetchone()[0] == 1


# -- aconnect / aclose ---------------------------------------------------------------------


async def test_aconnect_and_aclose(backend, db):
    await warm(db, 2)
    assert await db.aclose() is False  # nothing to close yet
    assert await db.aconnect() is True
    assert not db.is_closed()
    assert db.pool_stats().in_use == 1
    marker = await mark(db, backend)
    for _ in range(3):
        assert await on_mark(db, backend, marker)
    with pytest.raises(peewee.OperationalError):
        await db.aconnect()
    assert await db.aconnect(reuse_if_open=True) is False
    async with db.connection():  # a block inside reuses it
        assert await on_mark(db, backend, marker)
    assert db.pool_stats().in_use == 1
    assert await db.aclose() is True
    async with db.connection():
        assert await db.aclose() is False  # the block's connection is not aconnect()'s
        assert not db.is_closed()
        assert db.pool_stats().in_use == 1
    assert db.pool_stats().in_use == 0
    assert await db.aconnect() is True  # again, after aclose()
    assert db.pool_stats().in_use == 1
    assert await db.aclose() is True
    assert db.is_closed()
    assert db.pool_stats().in_use == 0
    assert await db.aclose() is False


async def test_aclose_in_another_task_without_aconnect(backend, db):
    await db.aconnect()
    try:
        # A child task sees no connection of its own: aclose() has nothing to close.
        assert await asyncio.create_task(db.aclose()) is False
        assert db.pool_stats().in_use == 1
        assert not db.is_closed()
    finally:
        assert await db.aclose() is True
    assert db.pool_stats().in_use == 0


async def test_task_ending_without_aclose_returns_connection(backend, db):
    async def forgetful() -> Any:
        await db.aconnect()
        return await mark(db, backend)

    marker = await asyncio.create_task(forgetful())
    await wait_until(lambda: db.pool_stats().in_use == 0, "the connection to come back")
    stats = db.pool_stats()
    assert (stats.open, stats.idle) == (1, 1)  # returned to the pool, not leaked nor closed
    if backend != "sqlite":
        assert await on_mark(db, backend, marker)  # the very same connection is reused


# -- outside blocks --------------------------------------------------------------------------


async def test_unpinned_queries_return_their_connection_at_once(backend, db, models):
    User = models.User
    steps = [
        lambda: db.aexecute_sql("SELECT 1"),
        lambda: User.acreate(name="a"),
        lambda: User.ainsert(name="b"),
        lambda: User.aselect().where(User.name == "a"),
        lambda: User.aselect().acount(),
        lambda: User.aget(User.name == "a"),
        lambda: User.aupdate(age=3).where(User.name == "a"),
        lambda: User.aget_or_create(name="c"),
        lambda: User.adelete().where(User.name == "b"),
    ]
    for step in steps:
        await step()
        assert db.pool_stats().in_use == 0
        assert db.is_closed()
        assert not db.in_transaction()
    assert await outside_count(backend, db, "ap_user") == 2


async def test_no_connection_held_for_the_life_of_a_task(backend, db_factory):
    db = db_factory(max_connections=1, timeout=5)
    queried = asyncio.Event()
    done = asyncio.Event()

    async def long_lived() -> int:
        value = (await db.aexecute_sql("SELECT 1")).fetchone()[0]
        queried.set()
        await done.wait()  # alive, but between queries
        return value + (await db.aexecute_sql("SELECT 1")).fetchone()[0]

    task = asyncio.create_task(long_lived())
    await queried.wait()
    # The only connection is free for this task although the other one still runs.
    assert db.pool_stats().in_use == 0
    assert (await db.aexecute_sql("SELECT 2")).fetchone()[0] == 2
    done.set()
    assert await task == 2


# -- child tasks -----------------------------------------------------------------------------


async def test_child_tasks_do_not_use_the_parents_connection(backend, db):
    await warm(db, 4)

    async def child() -> tuple[bool, bool, bool, bool]:
        plain = await on_mark(db, backend, marker)
        async with db.connection():
            pinned = await on_mark(db, backend, marker)
        return plain, pinned, db.is_closed(), db.in_transaction()

    async with db.connection():
        marker = await mark(db, backend)
        expected = (False, False, True, False)
        assert await asyncio.create_task(child()) == expected
        assert await asyncio.gather(child(), child()) == [expected, expected]
        async with asyncio.TaskGroup() as tg:
            grouped = [tg.create_task(child()) for _ in range(2)]
        assert [t.result() for t in grouped] == [expected, expected]
        # The parent still has its own connection, pinned.
        assert await on_mark(db, backend, marker)
        assert db.pool_stats().in_use == 1
    assert db.pool_stats().in_use == 0


async def test_child_tasks_do_not_join_the_parents_transaction(backend, db, models):
    User = models.User

    async def child(name: str) -> tuple[bool, bool]:
        # Runs outside the parent's transaction: its insert commits on its own.
        await User.acreate(name=name)
        return db.in_transaction(), db.is_closed()

    async def grouped_child(name: str) -> tuple[bool, bool]:
        async with db.atomic():
            await User.acreate(name=name)
            return db.in_transaction(), db.is_closed()

    with pytest.raises(RuntimeError, match="roll back"):
        async with db.atomic():
            assert db.in_transaction()
            assert await asyncio.create_task(child("task")) == (False, True)
            assert await asyncio.gather(child("gather1"), child("gather2")) == \
                [(False, True), (False, True)]
            async with asyncio.TaskGroup() as tg:
                t = tg.create_task(grouped_child("group"))
            assert t.result() == (True, False)
            # Committed already: visible to others while the parent's transaction runs.
            assert await outside_count(backend, db, "ap_user") == 4
            await User.acreate(name="parent")
            assert await User.aselect().acount() == 5
            raise RuntimeError("roll back the parent")
    names = sorted(u.name for u in await User.aselect())
    assert names == ["gather1", "gather2", "group", "task"]
    assert await outside_count(backend, db, "ap_user") == 4
    assert db.pool_stats().in_use == 0


# -- async with db, per-task state -----------------------------------------------------------


async def test_async_with_db_is_a_pinned_transaction(backend, db, models):
    User = models.User
    await warm(db, 2)
    async with db:
        assert db.in_transaction()
        assert not db.is_closed()
        marker = await mark(db, backend)
        await User.acreate(name="kept")
        assert await on_mark(db, backend, marker)
        assert await outside_count(backend, db, "ap_user") == 0  # not committed yet
        assert db.pool_stats().in_use == 1
    assert await outside_count(backend, db, "ap_user") == 1
    assert db.pool_stats().in_use == 0
    assert db.is_closed() and not db.in_transaction()

    with pytest.raises(KeyError):
        async with db:
            await User.acreate(name="lost")
            raise KeyError("boom")
    assert await outside_count(backend, db, "ap_user") == 1
    assert db.pool_stats().in_use == 0
    assert not db.in_transaction()


async def test_state_is_per_task(backend, db):
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def in_txn() -> None:
        async with db.atomic():
            inside.set()
            await leave.wait()

    async def observer() -> tuple[bool, bool]:
        return db.is_closed(), db.in_transaction()

    task = asyncio.create_task(in_txn())
    await inside.wait()
    # Another task (this one, and a new one) sees neither the connection nor the txn.
    assert db.is_closed() and not db.in_transaction()
    assert await asyncio.create_task(observer()) == (True, False)
    assert db.pool_stats().in_use == 1
    async with db.connection():
        assert not db.is_closed() and not db.in_transaction()
        assert db.pool_stats().in_use == 2
    leave.set()
    await task
    assert db.pool_stats().in_use == 0

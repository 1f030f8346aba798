"""Transactions and savepoints: atomic / transaction / savepoint blocks, nesting, explicit
commit and rollback, isolation levels, lock types, decorators, cancellation, and
concurrent read-modify-write."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiomysql
import asyncpg
import peewee
import pytest
from conftest import BACKENDS, MY, PG, outside_count

import apeewee

SERVER_BACKENDS = [b for b in BACKENDS if b in ("postgres", "mysql")]


async def conn_id(db: Any, backend: str) -> Any:
    """Identify the connection a statement runs on: PG pid, MySQL connection id; on
    SQLite the count of ap_txn_mark rows, which is 1 only on the connection whose
    uncommitted transaction inserted one."""
    if backend == "postgres":
        return (await db.aexecute_sql("SELECT pg_backend_pid()")).fetchone()[0]
    if backend == "mysql":
        return (await db.aexecute_sql("SELECT CONNECTION_ID()")).fetchone()[0]
    return (await db.aexecute_sql("SELECT COUNT(*) FROM ap_txn_mark")).fetchone()[0]


async def names(models: Any) -> list[str]:
    return sorted(u.name for u in await models.User.aselect())


# -- commit and rollback -----------------------------------------------------------------


async def test_atomic_commits_on_success(backend, db, models):
    async with db.atomic() as txn:
        assert isinstance(txn, apeewee.Transaction)
        assert db.in_transaction()
        await models.User.acreate(name="a")
        await models.User.acreate(name="b")
        assert await outside_count(backend, db, "ap_user") == 0
        assert await models.User.aselect().acount() == 2  # visible inside
    assert not db.in_transaction()
    assert await outside_count(backend, db, "ap_user") == 2
    assert db.pool_stats().in_use == 0


async def test_atomic_rolls_back_on_exception(backend, db, models):
    await models.User.acreate(name="before")
    with pytest.raises(ValueError, match="boom"):
        async with db.atomic():
            await models.User.acreate(name="lost")
            await models.User.aupdate(age=99)
            raise ValueError("boom")
    assert await names(models) == ["before"]
    assert (await models.User.aget(models.User.name == "before")).age == 0
    assert await outside_count(backend, db, "ap_user") == 1
    assert db.pool_stats().in_use == 0


async def test_database_error_in_block_rolls_back(backend, db, models):
    with pytest.raises(peewee.IntegrityError):
        async with db.atomic():
            await models.User.acreate(name="dup")
            await models.User.acreate(name="dup")
    assert await outside_count(backend, db, "ap_user") == 0
    assert db.pool_stats().in_use == 0
    await models.User.acreate(name="dup")  # the connection is clean afterwards
    assert await outside_count(backend, db, "ap_user") == 1


async def test_transaction_and_savepoint_blocks(backend, db, models):
    User = models.User
    async with db.transaction() as txn:
        assert isinstance(txn, apeewee.Transaction)
        await User.acreate(name="t1")
        async with db.transaction():  # nested: joins the outer one
            await User.acreate(name="t2")
        assert await outside_count(backend, db, "ap_user") == 0  # inner exit did not commit
        async with db.savepoint() as sp:
            assert isinstance(sp, apeewee.Savepoint)
            await User.acreate(name="sp-kept")
        with pytest.raises(LookupError):
            async with db.savepoint():
                await User.acreate(name="sp-lost")
                raise LookupError
        assert db.transaction_depth() == 1
    assert await names(models) == ["sp-kept", "t1", "t2"]
    assert await outside_count(backend, db, "ap_user") == 3


async def test_nested_atomic_is_a_savepoint(backend, db, models):
    User = models.User
    async with db.atomic():
        await User.acreate(name="outer1")
        with pytest.raises(RuntimeError):
            async with db.atomic() as inner:
                assert isinstance(inner, apeewee.Savepoint)
                assert db.transaction_depth() == 2
                await User.acreate(name="inner-lost")
                raise RuntimeError
        # A database error inside a savepoint leaves the outer transaction usable.
        with pytest.raises(peewee.IntegrityError):
            async with db.atomic():
                await User.acreate(name="outer1")
        async with db.atomic():
            await User.acreate(name="inner-kept")
            async with db.atomic():
                await User.acreate(name="deep-kept")
        await User.acreate(name="outer2")
        assert db.transaction_depth() == 1
    assert await names(models) == ["deep-kept", "inner-kept", "outer1", "outer2"]
    assert await outside_count(backend, db, "ap_user") == 4


async def test_explicit_commit_and_rollback(backend, db, models):
    User = models.User
    async with db.atomic() as txn:
        await User.acreate(name="a")
        await txn.acommit()
        assert await outside_count(backend, db, "ap_user") == 1  # visible at once
        assert db.in_transaction()  # and a new transaction began
        await User.acreate(name="b")
        await txn.arollback()
        assert await names(models) == ["a"]
        await User.acreate(name="c")
        async with db.atomic() as sp:
            await User.acreate(name="d")
            await sp.arollback()
            await User.acreate(name="e")
            await sp.acommit()
        assert await outside_count(backend, db, "ap_user") == 1
    assert await names(models) == ["a", "c", "e"]
    assert await outside_count(backend, db, "ap_user") == 3
    with pytest.raises(peewee.InterfaceError):
        await txn.acommit()  # the block is over


async def test_block_pins_its_connection(backend, db, models):
    if backend == "sqlite":
        await db.aexecute_sql("CREATE TABLE ap_txn_mark (x INTEGER)")
    try:
        # Some idle connections, so a statement routed elsewhere would find one.
        gate = asyncio.Event()

        async def hold() -> None:
            async with db.connection():
                await db.aexecute_sql("SELECT 1")
                await gate.wait()

        holders = [asyncio.create_task(hold()) for _ in range(3)]
        for _ in range(500):
            if db.pool_stats().in_use == 3:
                break
            await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(*holders)

        async with db.atomic():
            if backend == "sqlite":
                # An uncommitted row is seen only on the transaction's own connection.
                await db.aexecute_sql("INSERT INTO ap_txn_mark VALUES (1)")
            first = await conn_id(db, backend)
            assert first != 0
            for i in range(5):
                await models.User.acreate(name=f"u{i}")
                assert await conn_id(db, backend) == first
                assert db.pool_stats().in_use == 1
            async with db.atomic():
                assert await conn_id(db, backend) == first
        assert db.pool_stats().in_use == 0
    finally:
        if backend == "sqlite":
            await db.aexecute_sql("DROP TABLE ap_txn_mark")


# -- options --------------------------------------------------------------------------------


async def current_isolation(db: Any, backend: str) -> str:
    """The isolation level of the open transaction on the pinned connection."""
    if backend == "postgres":
        return str((await db.aexecute_sql("SHOW transaction_isolation")).fetchone()[0])
    # MySQL: the transaction must have written to show up in innodb_trx.
    await db.aexecute_sql("UPDATE ap_counter SET value = value + 1 WHERE `key` = 'iso'")
    # InnoDB serves innodb_trx from a cache refreshed at most every 0.1 s; past that,
    # the next read sees this transaction.
    await asyncio.sleep(0.15)
    row = (await db.aexecute_sql(
        "SELECT TRX_ISOLATION_LEVEL FROM information_schema.innodb_trx "
        "WHERE trx_mysql_thread_id = CONNECTION_ID()")).fetchone()
    assert row is not None, "no open InnoDB transaction on this connection"
    return str(row[0]).lower()


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
async def test_isolation_level(backend, db, models):
    await models.Counter.acreate(key="iso", value=0)
    async with db.connection():
        async with db.atomic():
            default = await current_isolation(db, backend)
        assert default in ("read committed", "repeatable read")
        async with db.atomic(isolation_level="serializable"):
            assert await current_isolation(db, backend) == "serializable"
        # Only that transaction: the next one on the same connection is back to default.
        async with db.atomic():
            assert await current_isolation(db, backend) == default
        async with db.transaction(isolation_level="READ_UNCOMMITTED"):
            assert await current_isolation(db, backend) == "read uncommitted"
        async with db.atomic(isolation_level="serializable") as txn:
            await current_isolation(db, backend)
            await txn.acommit()  # the transaction begun after it keeps the level
            assert await current_isolation(db, backend) == "serializable"
    assert db.pool_stats().in_use == 0


async def test_invalid_isolation_level(backend, db):
    with pytest.raises(ValueError):
        async with db.atomic(isolation_level="chaotic"):
            pass
    assert db.pool_stats().in_use == 0
    assert not db.in_transaction()
    if backend == "sqlite":  # SQLite has lock types, no isolation levels
        with pytest.raises(ValueError):
            async with db.atomic(isolation_level="serializable"):
                pass
    assert (await db.aexecute_sql("SELECT 1")).fetchone()[0] == 1


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "sqlite"])
async def test_sqlite_lock_type(backend, db, models):
    def try_write_lock() -> bool:
        other = sqlite3.connect(db.database, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            return False
        finally:
            other.close()

    async with db.atomic():  # deferred: no lock before the first write
        await models.User.aselect().acount()
        assert try_write_lock()
    async with db.atomic(lock_type="immediate"):  # the write lock at BEGIN
        assert not try_write_lock()
    async with db.transaction(lock_type="exclusive"):
        assert not try_write_lock()
    assert try_write_lock()
    with pytest.raises(ValueError):
        async with db.atomic(lock_type="sideways"):
            pass
    assert db.pool_stats().in_use == 0


# -- decorators, misuse ------------------------------------------------------------------------


async def test_atomic_as_decorator(backend, db, models):
    User = models.User

    @db.atomic()
    async def add(name: str, fail: bool = False) -> int:
        """adds a user"""
        assert db.in_transaction()
        await User.acreate(name=name)
        if fail:
            raise RuntimeError("undo")
        return await User.aselect().acount()

    assert add.__name__ == "add" and add.__doc__ == "adds a user"
    assert await add("a") == 1
    with pytest.raises(RuntimeError):
        await add("b", fail=True)
    assert await add("c") == 2  # reusable
    await asyncio.gather(add("d"), add("e"))  # and concurrently, a transaction each
    assert await names(models) == ["a", "c", "d", "e"]
    assert await outside_count(backend, db, "ap_user") == 4
    assert db.pool_stats().in_use == 0

    @db.transaction()
    async def tx_add(name: str) -> None:
        await User.acreate(name=name)

    await tx_add("f")
    assert await outside_count(backend, db, "ap_user") == 5
    with pytest.raises(TypeError):
        db.atomic()(lambda: None)


async def test_savepoint_needs_a_transaction(backend, db):
    with pytest.raises(peewee.OperationalError):
        async with db.savepoint():
            pass
    async with db.connection():
        with pytest.raises(peewee.OperationalError):
            async with db.savepoint():
                pass
    assert db.pool_stats().in_use == 0


async def test_sync_blocks_are_refused(backend, db):
    for block in (db.atomic(), db.transaction(), db.savepoint(), db.connection(), db):
        with pytest.raises(apeewee.SyncQueryError), block:
            pass
    assert issubclass(apeewee.SyncQueryError, peewee.InterfaceError)
    assert db.pool_stats().open == 0


# -- cancellation ----------------------------------------------------------------------------


async def test_cancellation_rolls_back(backend, db, models):
    entered = asyncio.Event()
    never = asyncio.Event()

    async def writer() -> None:
        async with db.atomic():
            await models.User.acreate(name="cancelled")
            async with db.atomic():
                await models.User.acreate(name="cancelled-inner")
                entered.set()
                await never.wait()

    task = asyncio.create_task(writer())
    await entered.wait()
    assert db.pool_stats().in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.pool_stats().in_use == 0
    assert await outside_count(backend, db, "ap_user") == 0
    await models.User.acreate(name="after")
    assert await names(models) == ["after"]


async def statement_running(backend: str, sql: str) -> bool:
    """Whether some session runs ``sql`` now, asked through a connection of our own."""
    if backend == "postgres":
        pg = await asyncpg.connect(**PG)
        try:
            return bool(await pg.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                sql))
        finally:
            await pg.close()
    my = await aiomysql.connect(host=MY["host"], port=MY["port"], user=MY["user"],
                                password=MY["password"], db=MY["database"], autocommit=True)
    try:
        async with my.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                              "WHERE INFO = %s", (sql,))
            return bool((await cur.fetchone())[0])
    finally:
        my.close()


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
async def test_cancellation_during_a_statement_rolls_back(backend, db, models):
    sleep_sql = "SELECT pg_sleep(30)" if backend == "postgres" else "SELECT SLEEP(30)"
    written = asyncio.Event()

    async def writer() -> None:
        async with db.atomic():
            await models.User.acreate(name="cancelled")
            written.set()
            await db.aexecute_sql(sleep_sql)

    task = asyncio.create_task(writer())
    await written.wait()
    for _ in range(200):  # until the server runs the statement
        if await statement_running(backend, sleep_sql):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the statement never started")
    task.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)  # no waiting out the 30 s statement
        assert db.pool_stats().in_use == 0
        assert await outside_count(backend, db, "ap_user") == 0
        await models.User.acreate(name="after")
        assert await outside_count(backend, db, "ap_user") == 1
    finally:
        if backend == "mysql":
            # The server notices the dropped client only after a while; end the orphan
            # statement (and its transaction's locks) now, so the teardown doesn't wait.
            await kill_statement(sleep_sql)


async def kill_statement(sql: str) -> None:
    my = await aiomysql.connect(host=MY["host"], port=MY["port"], user=MY["user"],
                                password=MY["password"], db=MY["database"], autocommit=True)
    try:
        async with my.cursor() as cur:
            await cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = %s",
                              (sql,))
            for (thread_id,) in await cur.fetchall():
                try:
                    await cur.execute(f"KILL {int(thread_id)}")
                except aiomysql.OperationalError:
                    pass  # gone meanwhile
    finally:
        my.close()


# -- concurrency -----------------------------------------------------------------------------


async def test_concurrent_increments_are_serialized(backend, db, models):
    Counter = models.Counter
    await Counter.acreate(key="hits", value=0)
    kwargs = {"lock_type": "immediate"} if backend == "sqlite" else {}

    async def increment() -> None:
        async with db.atomic(**kwargs):
            query = Counter.aselect().where(Counter.key == "hits")
            if backend != "sqlite":
                query = query.for_update()
            row = await query.aget()
            await asyncio.sleep(0)  # invite interleaving
            await Counter.aupdate(value=row.value + 1).where(Counter.key == "hits")

    await asyncio.gather(*(increment() for _ in range(20)))
    assert (await Counter.aget_by_id("hits")).value == 20
    assert await outside_count(backend, db, "ap_counter", "WHERE value = 20") == 1
    assert db.pool_stats().in_use == 0


# -- SQLite: a deferred BEGIN travels with the transaction's first statement ------------


async def _traced(db: Any) -> list[str]:
    """SQLite's own trace of the statements run on the task's pinned connection."""
    statements: list[str] = []
    await db._scope().entry.conn.raw.set_trace_callback(statements.append)  # aiosqlite's
    return statements


async def test_sqlite_deferred_begin_goes_with_the_first_statement(tmp_path):
    from conftest import define_models, make_db

    db = make_db("sqlite", tmp_path)
    ns = define_models(db)
    await db.acreate_tables(ns.all)
    User = ns.User
    async with db.connection():
        statements = await _traced(db)
        async with db.atomic():
            assert db.in_transaction()
            await User.acreate(name="a", age=1)
            # the write is inside a real transaction: invisible to another connection
            assert await outside_count("sqlite", db, "ap_user") == 0
            await User.acreate(name="b", age=2)
        assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
        assert await outside_count("sqlite", db, "ap_user") == 2

        statements.clear()
        async with db.atomic():  # nothing ran: nothing to begin or commit
            pass
        assert statements == []

        statements.clear()
        with pytest.raises(peewee.IntegrityError):
            async with db.atomic():
                await User.acreate(name="a", age=3)  # duplicate name: the first statement fails
        assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "ROLLBACK"]
        assert not db.in_transaction()

        statements.clear()
        async with db.atomic(), db.atomic():  # a savepoint as the first statement
            await User.acreate(name="c", age=4)
        assert [s.split()[0] for s in statements] == [
            "BEGIN", "SAVEPOINT", "INSERT", "RELEASE", "COMMIT"]

        statements.clear()
        async with db.atomic(lock_type="immediate"):  # takes its lock at once
            assert [s.split()[0] for s in statements] == ["BEGIN"]
            assert "IMMEDIATE" in statements[0]
    assert await User.aselect().acount() == 3
    await db.close_pool()

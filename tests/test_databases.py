"""The database classes: deferred init, proxies, :memory: SQLite, db.Model, peewee
compatibility, SQLite pragmas and functions, connection options, schema changes."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import asyncpg
import peewee
import pytest
from conftest import BACKENDS, MY, PG, define_models, outside_count
from helpers import live_server_ids as live_ids

import apeewee

SQLITE_ONLY = [b for b in BACKENDS if b == "sqlite"]
PG_ONLY = [b for b in BACKENDS if b == "postgres"]


def deferred_db(backend: str) -> Any:
    cls = {"sqlite": apeewee.SqliteDatabase, "postgres": apeewee.PostgresqlDatabase,
           "mysql": apeewee.MySQLDatabase}[backend]
    return cls(None)


def init_args(backend: str, tmp_path: Any) -> tuple[str, dict[str, Any]]:
    if backend == "sqlite":
        return str(tmp_path / "deferred.db"), {"pragmas": {"journal_mode": "wal"}}
    params = dict(PG if backend == "postgres" else MY)
    return params.pop("database"), params


async def two_connections(db: Any, fn: Any) -> list[Any]:
    """Run ``fn()`` on two different pooled connections, held at the same time."""
    both = asyncio.Event()
    pinned = 0

    async def on_one() -> Any:
        nonlocal pinned
        async with db.connection():
            pinned += 1
            if pinned == 2:
                both.set()
            await both.wait()
            return await fn()

    results = await asyncio.gather(on_one(), on_one())
    assert db.pool_stats().open >= 2
    return list(results)


# -- deferred init ---------------------------------------------------------------------------


async def test_deferred_init(backend, tmp_path):
    db = deferred_db(backend)
    assert db.deferred

    class Thing(apeewee.Model):
        name = peewee.CharField(max_length=32)

        class Meta:
            database = db
            table_name = "ap_deferred_thing"

    with pytest.raises(peewee.InterfaceError, match="init"):
        await db.aexecute_sql("SELECT 1")
    with pytest.raises(peewee.InterfaceError, match="init"):
        await Thing.aselect()
    with pytest.raises(peewee.InterfaceError, match="init"):
        async with db.atomic():
            pass
    assert db.pool_stats().open == 0

    name, params = init_args(backend, tmp_path)
    db.init(name, max_connections=2, timeout=5, **params)
    assert not db.deferred
    try:
        assert (await db.aexecute_sql("SELECT 1")).fetchone()[0] == 1
        assert db.pool_stats().max == 2
        await db.adrop_tables([Thing])
        await db.acreate_tables([Thing])
        await Thing.acreate(name="x")
        assert [t.name for t in await Thing.aselect()] == ["x"]
        await db.adrop_tables([Thing])
    finally:
        await db.close_pool()


async def test_reinit_replaces_the_pool(backend, tmp_path):
    db = deferred_db(backend)
    name, params = init_args(backend, tmp_path)
    db.init(name, max_connections=2, **params)
    try:
        threads_before = set(threading.enumerate())
        if backend == "sqlite":
            await db.aexecute_sql("SELECT 1")
            old: set[Any] = set(threading.enumerate()) - threads_before
        else:
            sql = "SELECT pg_backend_pid()" if backend == "postgres" else "SELECT CONNECTION_ID()"
            old = {(await db.aexecute_sql(sql)).fetchone()[0]}
        assert len(old) == 1
        db.init(name, max_connections=3, **params)
        assert db.pool_stats().max == 3
        assert (await db.aexecute_sql("SELECT 1")).fetchone()[0] == 1
        assert db.pool_stats().opened_total == 1  # a new pool
        # The old pool's connection gets closed.
        for _ in range(200):
            if backend == "sqlite":
                alive = {t for t in old if t.is_alive()}
            else:
                alive = await live_ids(backend, old)
            if not alive:
                break
            await asyncio.sleep(0.02)
        assert not alive, "the replaced pool's connection is still open"
        # ...and nothing is left running forever in the background.
        me = asyncio.current_task()
        for _ in range(200):
            others = [t for t in asyncio.all_tasks() if t is not me]
            if not others:
                break
            await asyncio.sleep(0.01)
        assert others == [], f"tasks still running after init(): {others}"
    finally:
        await db.close_pool()


# -- proxies -----------------------------------------------------------------------------------


async def test_peewee_database_proxy(backend, db, models):
    proxy = peewee.DatabaseProxy()
    ns = define_models(proxy)  # the same tables, through a proxy
    with pytest.raises(peewee.InterfaceError):
        await ns.User.aselect()  # not initialized yet
    proxy.initialize(db)
    alice = await ns.User.acreate(name="alice", age=30)
    await ns.Tweet.acreate(user=alice, body="hi")
    assert [u.name for u in await ns.User.aselect()] == ["alice"]
    assert await ns.Tweet.aselect().join(ns.User).where(ns.User.name == "alice").acount() == 1
    got, created = await ns.User.aget_or_create(name="bob")
    assert created and got.id
    with pytest.raises(RuntimeError):
        async with db.atomic():
            await ns.User.acreate(name="carol")
            raise RuntimeError
    assert await outside_count(backend, db, "ap_user") == 2
    # The same rows through the directly bound models.
    assert sorted(u.name for u in await models.User.aselect()) == ["alice", "bob"]


async def test_apeewee_database_proxy(backend, db, models):
    proxy = apeewee.DatabaseProxy()
    assert isinstance(proxy, peewee.DatabaseProxy)
    ns = define_models(proxy)
    proxy.initialize(db)

    with pytest.raises(KeyError):
        async with proxy.atomic() as txn:
            assert isinstance(txn, apeewee.Transaction)
            await ns.User.acreate(name="lost")
            raise KeyError
    assert await outside_count(backend, db, "ap_user") == 0

    async with proxy.transaction():
        await ns.User.acreate(name="kept")
        with pytest.raises(KeyError):
            async with proxy.savepoint():
                await ns.User.acreate(name="lost")
                raise KeyError
        async with proxy.atomic() as sp:
            assert isinstance(sp, apeewee.Savepoint)
            await ns.User.acreate(name="kept2")
    assert await outside_count(backend, db, "ap_user") == 2

    async with proxy.connection():
        assert not db.is_closed()
        assert db.pool_stats().in_use == 1

    @proxy.connection_context()
    async def pinned() -> bool:
        return not db.is_closed()

    assert await pinned()
    assert db.is_closed()

    class Note(proxy.Model):
        body = peewee.CharField(max_length=32)

        class Meta:
            table_name = "ap_proxy_note"

    assert issubclass(Note, apeewee.Model)
    assert Note._meta.database is proxy
    await db.adrop_tables([Note])
    await db.acreate_tables([Note])
    try:
        await Note.acreate(body="n")
        assert (await Note.aget()).body == "n"
    finally:
        await db.adrop_tables([Note])
    assert db.pool_stats().in_use == 0


# -- SQLite :memory: ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", SQLITE_ONLY)
async def test_sqlite_memory_is_one_shared_connection(backend):
    db = apeewee.SqliteDatabase(":memory:", max_connections=10, stale_timeout=0.1)
    try:
        assert db.pool_stats().max == 1
        ns = define_models(db)
        await db.acreate_tables(ns.all)

        async def add(i: int) -> None:
            await ns.User.acreate(name=f"u{i}")

        await asyncio.gather(*(add(i) for i in range(10)))
        assert await asyncio.create_task(ns.User.aselect().acount()) == 10
        async with db.atomic():
            await ns.User.acreate(name="in-txn")
        assert await asyncio.create_task(ns.User.aselect().acount()) == 11
        await asyncio.sleep(0.2)  # older than stale_timeout: kept anyway, or the data is gone
        assert await ns.User.aselect().acount() == 11
        stats = db.pool_stats()
        assert (stats.max, stats.open, stats.opened_total) == (1, 1, 1)
    finally:
        await db.close_pool()


# -- classes ---------------------------------------------------------------------------------


def test_database_classes_are_peewee_databases(backend, tmp_path):
    name, params = init_args(backend, tmp_path)
    cls, base = {"sqlite": (apeewee.SqliteDatabase, peewee.SqliteDatabase),
                 "postgres": (apeewee.PostgresqlDatabase, peewee.PostgresqlDatabase),
                 "mysql": (apeewee.MySQLDatabase, peewee.MySQLDatabase)}[backend]
    assert issubclass(cls, base)
    db = cls(name, **params)
    assert isinstance(db, base)
    assert isinstance(db, peewee.Database)
    assert isinstance(db, apeewee.AsyncDatabase)
    assert db.pool_stats().open == 0  # constructing opens nothing


async def test_db_model_base_class(backend, db):
    Base = db.Model
    assert Base is db.Model
    assert issubclass(Base, apeewee.Model)

    class Item(Base):
        name = peewee.CharField(max_length=32)
        qty = peewee.IntegerField(default=0)

        class Meta:
            table_name = "ap_db_item"

    assert Item._meta.database is db
    for method in ("aselect", "ainsert", "ainsert_many", "aupdate", "adelete", "acreate",
                   "aget", "aget_or_none", "aget_by_id", "aget_or_create", "adelete_by_id",
                   "abulk_create", "abulk_update", "asave", "adelete_instance"):
        assert callable(getattr(Item, method)), method
    await db.adrop_tables([Item])
    await db.acreate_tables([Item])
    try:
        item = await Item.acreate(name="a", qty=1)
        await Item.ainsert_many([{"name": "b"}, {"name": "c"}])
        item.qty = 5
        await item.asave()
        assert (await Item.aget_by_id(item.id)).qty == 5
        assert await Item.aselect().acount() == 3
        assert await Item.adelete().where(Item.name != "a") == 2
        assert await outside_count(backend, db, "ap_db_item") == 1
    finally:
        await db.adrop_tables([Item])


# -- SQLite pragmas and functions ------------------------------------------------------------


@pytest.mark.parametrize("backend", SQLITE_ONLY)
async def test_sqlite_pragmas_on_every_connection(backend, db_factory):
    db = db_factory(pragmas={"journal_mode": "wal", "foreign_keys": 1, "cache_size": -2000})
    await db.aexecute_sql("SELECT 1")  # one connection first: it switches to WAL

    async def pragmas() -> tuple[Any, ...]:
        return tuple([(await db.aexecute_sql(f"PRAGMA {p}")).fetchone()[0]
                      for p in ("cache_size", "foreign_keys", "journal_mode")])

    assert await two_connections(db, pragmas) == [(-2000, 1, "wal")] * 2
    # foreign_keys is really on: a dangling reference is refused.
    ns = define_models(db)
    await db.acreate_tables(ns.all)
    with pytest.raises(peewee.IntegrityError):
        await ns.Tweet.acreate(user=12345, body="orphan")


@pytest.mark.parametrize("backend", SQLITE_ONLY)
async def test_sqlite_function_registered_before_use(backend, db_factory):
    db = db_factory()

    @db.func("ap_double")
    def double(x: int) -> int:
        return x * 2

    await db.aexecute_sql("SELECT 1")  # one connection first: it switches to WAL

    async def call() -> int:
        return int((await db.aexecute_sql("SELECT ap_double(21)")).fetchone()[0])

    assert await two_connections(db, call) == [42, 42]


@pytest.mark.parametrize("backend", SQLITE_ONLY)
async def test_sqlite_function_registered_after_the_pool_started(backend, db_factory):
    db = db_factory()
    await db.aexecute_sql("SELECT 1")  # the pool (and a connection) exists now

    @db.func("ap_triple")
    def triple(x: int) -> int:
        return x * 3

    # On the idle connection opened before the registration, and on new ones.
    assert (await db.aexecute_sql("SELECT ap_triple(3)")).fetchone()[0] == 9

    async def call() -> int:
        return int((await db.aexecute_sql("SELECT ap_triple(2)")).fetchone()[0])

    assert await two_connections(db, call) == [6, 6]


@pytest.mark.parametrize("backend", SQLITE_ONLY)
async def test_sqlite_function_registered_inside_a_pinned_block(backend, db_factory):
    db = db_factory()
    async with db.connection():
        await db.aexecute_sql("SELECT 1")

        @db.func("ap_quad")
        def quad(x: int) -> int:
            return x * 4

        assert (await db.aexecute_sql("SELECT ap_quad(2)")).fetchone()[0] == 8


# -- connection options -----------------------------------------------------------------------


async def test_connect_timeout_accepted(backend, db_factory):
    db = db_factory(connect_timeout=5)
    assert (await db.aexecute_sql("SELECT 1")).fetchone()[0] == 1


@pytest.mark.parametrize("backend", PG_ONLY)
@pytest.mark.parametrize("cache_size", [0, 1, 256])
async def test_pg_statement_cache_size(backend, db_factory, cache_size):
    db = db_factory(statement_cache_size=cache_size, max_connections=1)
    ns = define_models(db)
    await db.adrop_tables(ns.all)
    await db.acreate_tables(ns.all)
    try:
        for i in range(5):  # the same statements again and again, and others between
            await ns.User.acreate(name=f"u{i}", age=i)
            assert await ns.User.aselect().where(ns.User.age >= 0).acount() == i + 1
            assert (await db.aexecute_sql("SELECT %s::int + 1", (i,))).fetchone()[0] == i + 1
        assert db.pool_stats().opened_total == 1
    finally:
        await db.adrop_tables(ns.all)


async def check_schema_change(db: Any) -> None:
    table = "ap_schema_" + uuid.uuid4().hex[:8]
    await db.aexecute_sql(f"CREATE TABLE {table} (a INTEGER)")
    try:
        await db.aexecute_sql(f"INSERT INTO {table} (a) VALUES (1)")
        async with db.connection():  # one connection: a cached statement would be reused
            first = await db.aexecute_sql(f"SELECT * FROM {table}")
            assert [tuple(r) for r in first.fetchall()] == [(1,)]
            await db.aexecute_sql(f"ALTER TABLE {table} ADD COLUMN b INTEGER DEFAULT 5")
            second = await db.aexecute_sql(f"SELECT * FROM {table}")
            assert [d[0] for d in second.description] == ["a", "b"]
            assert [tuple(r) for r in second.fetchall()] == [(1, 5)]
        # Unpinned (max_connections=1: the same connection again).
        await db.aexecute_sql(f"ALTER TABLE {table} ADD COLUMN c INTEGER DEFAULT 7")
        third = await db.aexecute_sql(f"SELECT * FROM {table}")
        assert [tuple(r) for r in third.fetchall()] == [(1, 5, 7)]
        assert db.pool_stats().opened_total == 1
    finally:
        await db.aexecute_sql(f"DROP TABLE {table}")


async def test_schema_change_between_identical_queries(backend, db_factory):
    await check_schema_change(db_factory(max_connections=1))


@pytest.mark.parametrize("backend", PG_ONLY)
async def test_pg_schema_change_without_statement_cache(backend, db_factory):
    await check_schema_change(db_factory(max_connections=1, statement_cache_size=0))


@pytest.mark.parametrize("backend", PG_ONLY)
async def test_pg_schema_change_from_another_connection(backend, db_factory):
    db = db_factory(max_connections=1)
    table = "ap_schema_" + uuid.uuid4().hex[:8]
    await db.aexecute_sql(f"CREATE TABLE {table} (a INTEGER)")
    try:
        await db.aexecute_sql(f"INSERT INTO {table} (a) VALUES (1)")
        assert [tuple(r) for r in (await db.aexecute_sql(f"SELECT * FROM {table}")).rows] \
            == [(1,)]
        other = await asyncpg.connect(**PG)
        try:
            await other.execute(f"ALTER TABLE {table} ADD COLUMN b INTEGER DEFAULT 5")
        finally:
            await other.close()
        rows = (await db.aexecute_sql(f"SELECT * FROM {table}")).rows
        assert [tuple(r) for r in rows] == [(1, 5)]
        assert db.pool_stats().opened_total == 1  # the same, cached, connection
    finally:
        await db.aexecute_sql(f"DROP TABLE {table}")

"""The pool under faults, on every backend: connection lifetime and idleness, health checks
at checkout, connections killed on the server, cancellation and statement timeouts, reset
on check-in, leaks, exhaustion, figures, retried conflicts, shutdown and logging.

Connections are killed only if they are this test's own pool's (ids collected through the
pool); the shared servers are never stopped. After each scenario the pool must be back to
normal (nothing checked out, a query works) and nothing committed may be lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import sqlite3
import time
import types
import uuid
from collections.abc import Callable
from typing import Any

import aiomysql
import asyncpg
import peewee
import pytest
from conftest import MY, PG, outside_count
from helpers import server_conn_id, wait_gone, wait_until

import apeewee

SERVERS = ["postgres", "mysql"]


# -- helpers -------------------------------------------------------------------------------


async def my_connect() -> Any:
    return await aiomysql.connect(host=MY["host"], port=MY["port"], user=MY["user"],
                                  password=MY["password"], db=MY["database"], autocommit=True)


async def server_fetch(backend: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` through a connection of the test's own (``$1`` / ``%s`` placeholders)."""
    if backend == "postgres":
        pg = await asyncpg.connect(**PG)
        try:
            return [tuple(r) for r in await pg.fetch(sql, *args)]
        finally:
            await pg.close()
    my = await my_connect()
    try:
        async with my.cursor() as cur:
            await cur.execute(sql, args or None)
            return [tuple(r) for r in await cur.fetchall()]
    finally:
        my.close()


async def hold_connections(db: Any, backend: str, n: int) -> list[Any]:
    """Check out ``n`` connections at once (so the pool opens ``n``), return them idle;
    gives their server ids (PG / MySQL)."""
    gate = asyncio.Event()
    ids: list[Any] = []

    async def hold() -> None:
        async with db.connection():
            if backend == "sqlite":
                await db.aexecute_sql("SELECT 1")
            else:
                ids.append(await server_conn_id(db, backend))
            await gate.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(n)]
    await wait_until(lambda: db.pool_stats().in_use == n, f"{n} connections in use")
    gate.set()
    await asyncio.gather(*tasks)
    return ids


async def kill_on_server(backend: str, ids: list[Any] | set[Any]) -> None:
    """Kill these connections (of our own pool) from outside, and wait until they are gone."""
    if backend == "postgres":
        await server_fetch(backend, "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) "
                           "AS t(pid)", list(ids))
    else:
        my = await my_connect()
        try:
            async with my.cursor() as cur:
                for thread_id in ids:
                    await cur.execute(f"KILL {int(thread_id)}")
        finally:
            my.close()
    await wait_gone(backend, set(ids))


async def running_sleeps(backend: str, tag: str) -> int:
    """Statements of this test still on the server: PG rows (any state) of sessions named
    ``tag`` whose query sleeps; MySQL running statements that sleep and mention ``tag``."""
    if backend == "postgres":
        rows = await server_fetch(
            backend, "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND application_name = $1 AND query LIKE '%pg_sleep(%'", tag)
    else:
        rows = await server_fetch(
            backend, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE ID <> CONNECTION_ID() AND INFO LIKE '%%SLEEP(%%' AND INFO LIKE %s",
            f"%{tag}%")
    return int(rows[0][0])


async def wait_sleep_running(backend: str, tag: str) -> None:
    for _ in range(200):
        if await running_sleeps(backend, tag):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the sleeping statement never started on the server")


async def wait_sleeps_gone(backend: str, tag: str) -> None:
    for _ in range(200):
        if not await running_sleeps(backend, tag):
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the cancelled statement is still on the server")


async def assert_pool_normal(db: Any) -> None:
    """Nothing checked out or waiting, and a query works."""
    await wait_until(lambda: db.pool_stats().in_use == 0, "in_use back to 0")
    stats = db.pool_stats()
    assert (stats.in_use, stats.waiting) == (0, 0), stats
    assert (await db.aexecute_sql("SELECT 1")).fetchone()[0] == 1
    assert db.pool_stats().in_use == 0


def pool_entries(db: Any) -> list[Any]:
    pool = db._current_pool()
    return [*pool._in_use, *pool._idle]


def define_models(database: Any) -> types.SimpleNamespace:
    """User and Counter, in tables of this file's own (other suites may run meanwhile on
    the shared servers)."""

    class User(apeewee.Model):
        name = peewee.CharField(max_length=64, unique=True)
        age = peewee.IntegerField(default=0)

        class Meta:
            table_name = "ap_rel_user"

    class Counter(apeewee.Model):
        key = peewee.CharField(max_length=32, primary_key=True)
        value = peewee.IntegerField(default=0)

        class Meta:
            table_name = "ap_rel_counter"

    for model in (User, Counter):
        model._meta.set_database(database)
    return types.SimpleNamespace(User=User, Counter=Counter, all=[User, Counter])


@pytest.fixture
async def make(db_factory: Callable[..., Any]) -> Any:
    """Make a database with this file's tables (User, Counter), created empty and dropped
    after the test."""
    made: list[tuple[Any, Any]] = []

    async def factory(**options: Any) -> tuple[Any, Any]:
        db = db_factory(**options)
        ns = define_models(db)
        await db.adrop_tables(ns.all)
        await db.acreate_tables(ns.all)
        made.append((db, ns))
        return db, ns

    yield factory
    for db, ns in made:
        await db.adrop_tables(ns.all)


# -- 1. lifetime and idleness ----------------------------------------------------------------


async def test_stale_timeout_is_jittered_per_connection(db_factory):
    db = db_factory(max_connections=10, stale_timeout=1.0, timeout=10)
    await db.aexecute_sql("SELECT 1")  # one connection first (SQLite: it sets WAL mode)
    gate = asyncio.Event()

    async def hold() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            await gate.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(10)]
    try:
        await wait_until(lambda: db.pool_stats().in_use == 10, "10 connections in use")
        ages = [e.max_age for e in pool_entries(db)]
    finally:
        gate.set()
        await asyncio.gather(*tasks)
    assert len(ages) == 10
    assert all(0.9 <= a <= 1.0 for a in ages), ages
    assert len(set(ages)) == 10, f"connections opened together must expire apart: {ages}"
    await assert_pool_normal(db)


async def test_max_idle_reaper_closes_idle_down_to_min(db_factory, backend):
    db = db_factory(max_connections=5, min_connections=2, max_idle=0.3, timeout=10)
    await db.aexecute_sql("SELECT 1")
    await hold_connections(db, backend, 5)
    assert db.pool_stats().open == 5
    samples: list[int] = []

    def sampled() -> bool:
        stats = db.pool_stats()
        samples.append(stats.open)
        return stats.open == 2 and stats.discarded_total.get("idle", 0) >= 3

    await wait_until(sampled, "the reaper to close idle connections down to min", tries=300)
    for _ in range(40):  # several more reaper rounds: the minimum stays open
        samples.append(db.pool_stats().open)
        await asyncio.sleep(0.02)
    stats = db.pool_stats()
    assert min(samples) >= 2, f"idleness took the pool below min_connections: {samples}"
    assert stats.open == 2
    assert stats.discarded_total.get("idle", 0) == 3
    assert stats.closed_total == 3
    await assert_pool_normal(db)


async def test_close_idle_returns_count_and_min_is_refilled(db_factory):
    db = db_factory(max_connections=5, min_connections=3, timeout=10)
    await db.aexecute_sql("SELECT 1")
    await wait_until(lambda: db.pool_stats().idle >= 3, "min_connections to be opened")
    before = db.pool_stats()
    closed = await db.close_idle()
    assert closed == before.idle >= 3
    await wait_until(lambda: db.pool_stats().idle == 3, "the minimum to be refilled")
    stats = db.pool_stats()
    assert stats.opened_total == before.opened_total + 3
    assert stats.discarded_total.get("closed idle") == closed
    assert stats.closed_total == closed
    await assert_pool_normal(db)
    assert await db.close_idle() >= 1


async def test_close_stale_closes_long_held_connections(db_factory, backend):
    db = db_factory(max_connections=5, timeout=10)
    await db.aexecute_sql("SELECT 1")
    old_holding, young_holding, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
    outcome: dict[str, Any] = {}

    async def holder(name: str, holding: asyncio.Event) -> None:
        async with db.connection():
            if backend == "sqlite":
                await db.aexecute_sql("SELECT 1")
                outcome[name + " thread"] = db._scope().entry.conn.raw._thread
            else:
                outcome[name + " id"] = await server_conn_id(db, backend)
            holding.set()
            await go.wait()
            try:
                outcome[name] = (await db.aexecute_sql("SELECT 2")).fetchone()[0]
            except peewee.PeeweeException as exc:
                outcome[name] = exc

    old = asyncio.create_task(holder("old", old_holding))
    await old_holding.wait()
    await asyncio.sleep(0.3)
    young = asyncio.create_task(holder("young", young_holding))
    await young_holding.wait()
    assert await db.close_stale(age=0.25) == 1
    assert db.pool_stats().in_use == 1
    if backend != "sqlite":
        await wait_gone(backend, {outcome["old id"]})
    else:  # closed without awaiting: its aiosqlite thread must end while the loop runs
        await wait_until(lambda: not outcome["old thread"].is_alive(), "the thread to end")
    go.set()
    await asyncio.gather(old, young)
    assert isinstance(outcome["old"], peewee.PeeweeException), outcome
    assert outcome["young"] == 2
    assert db.pool_stats().discarded_total.get("leaked") == 1
    assert await db.close_stale(age=0.25) == 0
    await assert_pool_normal(db)


# -- 2. health check at checkout -------------------------------------------------------------


@pytest.mark.parametrize("backend", SERVERS)
async def test_dead_idle_connections_replaced_at_checkout(db_factory, backend, caplog):
    caplog.set_level(logging.WARNING, logger="apeewee.pool")
    db = db_factory(max_connections=3, ping_after=0, timeout=10)
    ids = await hold_connections(db, backend, 3)
    assert len(set(ids)) == 3
    await kill_on_server(backend, ids)
    # A transaction is never re-run, so it works only if checkout found the dead ones.
    async with db.atomic():
        fresh = await server_conn_id(db, backend)
    assert fresh not in ids
    async with db.connection():
        assert (await db.aexecute_sql("SELECT 5")).fetchone()[0] == 5
    for _ in range(3):
        assert (await db.aexecute_sql("SELECT 6")).fetchone()[0] == 6
    stats = db.pool_stats()
    assert stats.discarded_total.get("dead", 0) == 3, stats.discarded_total
    assert any(r.levelno == logging.WARNING and "dead" in r.getMessage()
               for r in caplog.records if r.name == "apeewee.pool")
    await assert_pool_normal(db)


@pytest.mark.parametrize("backend", SERVERS)
async def test_reaper_discards_dead_idle_connections_with_a_warning(db_factory, backend, caplog):
    caplog.set_level(logging.WARNING, logger="apeewee.pool")
    # The reaper runs every 0.25 s; the connections are far from 1 s idle when it finds
    # them dead.
    db = db_factory(max_connections=3, max_idle=1.0, ping_after=None, timeout=10)
    ids = await hold_connections(db, backend, 3)
    await kill_on_server(backend, ids)
    await wait_until(lambda: db.pool_stats().open == 0, "the reaper to drop the dead ones")
    stats = db.pool_stats()
    assert stats.discarded_total == {"dead": 3}, stats.discarded_total
    dead = [w for w in pool_warnings(caplog) if "dead" in w]
    assert len(dead) == 3, ("a dead connection discarded by the reaper must be logged as a "
                            f"WARNING, as at checkout: {pool_warnings(caplog)}")
    await assert_pool_normal(db)


@pytest.mark.parametrize("backend", SERVERS)
async def test_connect_attempts_are_bounded(db_factory, backend):
    """A server that accepts the TCP connection and then says nothing (hung, overloaded):
    ``timeout`` bounds the acquire, ``connect_timeout`` the connection attempt itself."""
    writers: list[asyncio.StreamWriter] = []

    async def accept_and_stay_silent(reader: asyncio.StreamReader,
                                     writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        db = db_factory(port=port, timeout=0.3)  # connect_timeout: the default 10 s
        with pytest.raises(apeewee.PoolTimeout, match="while connecting") as info:
            async with asyncio.timeout(5):
                await db.aexecute_sql("SELECT 1")
        assert "max_connections=" in str(info.value)
        stats = db.pool_stats()
        assert (stats.open, stats.opening, stats.in_use, stats.timeouts_total) == (0, 0, 0, 1)

        db = db_factory(port=port, connect_timeout=0.3)  # no pool timeout
        try:
            async with asyncio.timeout(3):
                with pytest.raises(peewee.OperationalError):
                    await db.aexecute_sql("SELECT 1")
        except TimeoutError:
            raise AssertionError("connect_timeout=0.3 did not bound a connection attempt "
                                 "to a server that never answers") from None
        stats = db.pool_stats()
        assert (stats.open, stats.opening, stats.in_use) == (0, 0, 0)
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


# -- 3. dead connections without a health check ----------------------------------------------


@pytest.mark.parametrize("backend", SERVERS)
async def test_killed_connections_select_runs_on_a_fresh_one(make, backend):
    db, m = await make(max_connections=3, ping_after=None, timeout=10)
    await m.User.acreate(name="u1")
    ids = await hold_connections(db, backend, 3)
    await kill_on_server(backend, ids)
    assert (await db.aexecute_sql("SELECT 42")).fetchone()[0] == 42
    assert [u.name for u in await m.User.aselect()] == ["u1"]
    assert await server_conn_id(db, backend) not in ids
    assert db.pool_stats().discarded_total.get("dead", 0) >= 1
    await assert_pool_normal(db)


@pytest.mark.parametrize("backend", SERVERS)
async def test_killed_connection_write_never_doubled(make, backend):
    db, m = await make(max_connections=1, ping_after=None, timeout=10)
    C = m.Counter
    await C.acreate(key="w", value=0)
    succeeded = failed = 0
    for _ in range(3):
        ids = await hold_connections(db, backend, 1)
        await kill_on_server(backend, ids)
        try:
            count = await C.aupdate(value=C.value + 1).where(C.key == "w")
        except peewee.OperationalError:
            failed += 1  # it may or may not have run; it must not have run twice
        else:
            succeeded += 1
            assert count == 1
        await assert_pool_normal(db)
    value = (await C.aget_by_id("w")).value
    assert succeeded <= value <= succeeded + failed, (value, succeeded, failed)
    assert await outside_count(backend, db, "ap_rel_counter", f"WHERE value = {value}") == 1
    await assert_pool_normal(db)


@pytest.mark.parametrize("backend", SERVERS)
async def test_connection_killed_inside_a_transaction(make, backend):
    db, m = await make(max_connections=2, ping_after=None, timeout=10)
    await m.User.acreate(name="committed")
    attempts = 0
    with pytest.raises(peewee.OperationalError) as info:
        async with db.atomic():
            await m.User.acreate(name="in-txn")
            own = await server_conn_id(db, backend)
            await kill_on_server(backend, [own])
            attempts += 1
            await m.User.acreate(name="after-kill")
            attempts += 1
    assert not isinstance(info.value, apeewee.PoolTimeout)
    assert attempts == 1
    assert await outside_count(backend, db, "ap_rel_user") == 1
    assert await outside_count(backend, db, "ap_rel_user", "WHERE name = 'committed'") == 1
    stats = db.pool_stats()
    assert stats.in_use == 0
    assert stats.discarded_total.get("dead", 0) >= 1, stats.discarded_total
    await assert_pool_normal(db)
    await m.User.acreate(name="later")
    assert await outside_count(backend, db, "ap_rel_user") == 2


async def running_sleep_ids(backend: str, tag: str) -> list[int]:
    """Server ids of the connections running a sleeping statement of this test."""
    if backend == "postgres":
        rows = await server_fetch(
            backend, "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep(%'", tag)
    else:
        rows = await server_fetch(
            backend, "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE ID <> CONNECTION_ID() AND INFO LIKE '%%SLEEP(%%' AND INFO LIKE %s",
            f"%{tag}%")
    return [int(r[0]) for r in rows]


async def kill_when_running(backend: str, tag: str) -> int:
    """Wait until a statement of this test sleeps on the server, then kill its connection."""
    for _ in range(300):
        ids = await running_sleep_ids(backend, tag)
        if ids:
            assert len(ids) == 1, ids
            await kill_on_server(backend, ids)
            return ids[0]
        await asyncio.sleep(0.005)
    raise AssertionError("the statement never started on the server")


@pytest.mark.parametrize("backend", SERVERS)
async def test_connection_killed_mid_statement(make, backend):
    tag = "rel" + uuid.uuid4().hex[:12]
    db, m = await make(max_connections=2, ping_after=None, timeout=10,
                       **({"server_settings": {"application_name": tag}}
                          if backend == "postgres" else {}))
    C = m.Counter
    await C.acreate(key="w", value=0)
    for _ in range(3):
        # A plain SELECT whose connection dies under it runs again on a fresh connection.
        sql = (f"SELECT pg_sleep(0.4), 7 /* {tag} */" if backend == "postgres"
               else f"SELECT SLEEP(0.4), 7 /* {tag} */")
        select = asyncio.create_task(db.aexecute_sql(sql))
        killed = await kill_when_running(backend, tag)
        row = (await asyncio.wait_for(select, 10)).fetchone()
        assert row[1] == 7
        assert await server_conn_id(db, backend) != killed
        await assert_pool_normal(db)
    assert db.pool_stats().discarded_total.get("dead", 0) == 3, db.pool_stats()
    # A write whose connection dies under it is not run again: it fails, applied at most once.
    key = '"key"' if backend == "postgres" else "`key`"
    sleep = "pg_sleep(0.4) IS NOT NULL" if backend == "postgres" else "SLEEP(0.4) = 0"
    for _ in range(3):
        update = asyncio.create_task(db.aexecute_sql(
            f"UPDATE ap_rel_counter SET value = value + 1 WHERE {key} = 'w' AND {sleep} "
            f"/* {tag} */"))
        await kill_when_running(backend, tag)
        with pytest.raises(peewee.OperationalError):
            await asyncio.wait_for(update, 10)
        await assert_pool_normal(db)
    assert await outside_count(backend, db, "ap_rel_counter", "WHERE value = 0") == 1
    assert db.pool_stats().discarded_total.get("dead", 0) == 6, db.pool_stats()


@pytest.mark.parametrize("backend", SERVERS)
async def test_connection_killed_mid_statement_in_a_transaction(make, backend):
    tag = "rel" + uuid.uuid4().hex[:12]
    db, m = await make(max_connections=2, ping_after=None, timeout=10,
                       **({"server_settings": {"application_name": tag}}
                          if backend == "postgres" else {}))
    sql = (f"SELECT pg_sleep(0.4) /* {tag} */" if backend == "postgres"
           else f"SELECT SLEEP(0.4) /* {tag} */")
    for i in range(3):
        statements = 0

        async def txn(i: int = i) -> None:
            nonlocal statements
            async with db.atomic():
                await m.User.acreate(name=f"lost{i}")
                statements += 1
                await db.aexecute_sql(sql)  # even a plain SELECT: never re-run in a transaction
                statements += 1

        task = asyncio.create_task(txn())
        await kill_when_running(backend, tag)
        with pytest.raises(peewee.OperationalError):
            await asyncio.wait_for(task, 10)
        assert statements == 1
        await assert_pool_normal(db)
    assert await outside_count(backend, db, "ap_rel_user") == 0
    stats = db.pool_stats()
    assert stats.discarded_total.get("dead", 0) == 3, stats.discarded_total


# -- 5. cancellation and timeouts ------------------------------------------------------------


def sleep_sql(backend: str, tag: str, seconds: int = 5) -> str:
    if backend == "postgres":
        return f"SELECT pg_sleep({seconds}) /* {tag} */"
    return f"SELECT SLEEP({seconds}) /* {tag} */"


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.parametrize("how", ["cancel", "timeout", "wait_for", "taskgroup"])
async def test_cancelled_statement_ends_cleanly(make, backend, how):
    tag = "rel" + uuid.uuid4().hex[:12]
    db, m = await make(max_connections=3, timeout=10,
                       **({"server_settings": {"application_name": tag}}
                          if backend == "postgres" else {}))
    await m.User.acreate(name="kept")
    sql = sleep_sql(backend, tag)
    for in_txn in (False, True):
        seen: list[type[BaseException]] = []

        async def sleeper(in_txn: bool = in_txn, seen: list[Any] = seen) -> None:
            try:
                if in_txn:
                    async with db.atomic():
                        await m.User.acreate(name=tag)
                        await db.aexecute_sql(sql)
                else:
                    await db.aexecute_sql(sql)
            except BaseException as exc:
                seen.append(type(exc))
                raise

        if how == "cancel":
            task = asyncio.create_task(sleeper())
            await wait_sleep_running(backend, tag)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif how in ("timeout", "wait_for"):
            # Watch the server meanwhile: the statement is cut off mid-flight.
            watcher = asyncio.create_task(wait_sleep_running(backend, tag))
            with pytest.raises(TimeoutError):
                if how == "timeout":
                    async with asyncio.timeout(0.2):
                        await sleeper()
                else:
                    await asyncio.wait_for(sleeper(), 0.2)
            if not watcher.done():
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                raise AssertionError("the statement never ran on the server before the timeout")
            await watcher
        else:
            async def failer() -> None:
                await wait_sleep_running(backend, tag)
                raise RuntimeError("sibling failed")

            with pytest.raises(ExceptionGroup) as info:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(sleeper())
                    tg.create_task(failer())
            assert [type(e) for e in info.value.exceptions] == [RuntimeError]
        assert seen == [asyncio.CancelledError], (in_txn, seen)
        await wait_until(lambda: db.pool_stats().in_use == 0, "in_use back to 0")
        await wait_sleeps_gone(backend, tag)
        assert await outside_count(backend, db, "ap_rel_user", f"WHERE name = '{tag}'") == 0
        await assert_pool_normal(db)
    assert db.pool_stats().discarded_total.get("cancelled", 0) >= 2
    assert await outside_count(backend, db, "ap_rel_user") == 1


@pytest.mark.parametrize("backend", SERVERS)
async def test_per_query_timeout(make, backend):
    tag = "rel" + uuid.uuid4().hex[:12]
    db, m = await make(max_connections=2, timeout=10,
                       **({"server_settings": {"application_name": tag}}
                          if backend == "postgres" else {}))
    await m.User.acreate(name=tag)
    with pytest.raises(apeewee.QueryTimeout) as info:
        await db.aexecute_sql(sleep_sql(backend, tag), timeout=0.3)
    assert isinstance(info.value, peewee.OperationalError)
    await wait_sleeps_gone(backend, tag)
    await assert_pool_normal(db)
    sleep = (peewee.fn.pg_sleep(5).is_null() if backend == "postgres"
             else peewee.fn.SLEEP(5) == 0)
    query = m.User.aselect().where(sleep, m.User.name == tag)
    with pytest.raises(apeewee.QueryTimeout):
        await query.aexecute(timeout=0.3)
    await wait_sleeps_gone(backend, tag)
    assert db.pool_stats().discarded_total.get("timed out", 0) == 2
    # Inside a transaction: the statement times out and the transaction is lost.
    with pytest.raises(apeewee.QueryTimeout):
        async with db.atomic():
            await m.User.acreate(name="in-txn")
            await db.aexecute_sql(sleep_sql(backend, tag), timeout=0.3)
    await wait_sleeps_gone(backend, tag)
    assert await outside_count(backend, db, "ap_rel_user", "WHERE name = 'in-txn'") == 0
    # A short statement under a timeout runs normally.
    assert (await db.aexecute_sql("SELECT 3", timeout=2.5)).fetchone()[0] == 3
    await assert_pool_normal(db)


@pytest.mark.parametrize("backend", SERVERS)
async def test_database_wide_query_timeout(make, backend):
    tag = "rel" + uuid.uuid4().hex[:12]
    db, m = await make(max_connections=2, timeout=10, query_timeout=0.3,
                       **({"server_settings": {"application_name": tag}}
                          if backend == "postgres" else {}))
    await m.User.acreate(name=tag)
    sleep = (peewee.fn.pg_sleep(5).is_null() if backend == "postgres"
             else peewee.fn.SLEEP(5) == 0)
    with pytest.raises(apeewee.QueryTimeout):
        await m.User.aselect().where(sleep, m.User.name == tag)
    await wait_sleeps_gone(backend, tag)
    with pytest.raises(apeewee.QueryTimeout):
        await db.aexecute_sql(sleep_sql(backend, tag))
    await wait_sleeps_gone(backend, tag)
    # Normal statements are not affected, and a per-query timeout overrides the default.
    assert [u.name for u in await m.User.aselect()] == [tag]
    short = "SELECT pg_sleep(0.5)" if backend == "postgres" else "SELECT SLEEP(0.5)"
    await db.aexecute_sql(short, timeout=5)
    assert db.pool_stats().discarded_total.get("timed out", 0) == 2
    await assert_pool_normal(db)


SQLITE_LONG = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
               "WHERE x < 100000000) SELECT count(*) FROM c")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("in_txn", [False, True], ids=["autocommit", "transaction"])
async def test_sqlite_cancelled_long_query(make, backend, in_txn):
    db, m = await make(max_connections=2, timeout=10,
                       pragmas={"journal_mode": "wal", "busy_timeout": 1000})
    await m.User.acreate(name="kept")
    await hold_connections(db, backend, 2)  # both connections open: the second is spare

    async def long_query() -> None:
        if in_txn:
            async with db.atomic():
                await m.User.acreate(name="cancelled")
                await db.aexecute_sql(SQLITE_LONG)
        else:
            await db.aexecute_sql(SQLITE_LONG)

    task = asyncio.create_task(long_query())
    await wait_until(lambda: db.pool_stats().in_use == 1, "the long query to start")
    raw = next(iter(db._current_pool()._in_use)).conn.raw
    sqlite_conn = raw._connection  # the sqlite3 connection, to clean up after a failure
    await asyncio.sleep(0.1)  # in sqlite3 now
    task.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)  # no waiting out the statement (some 50 s)
        # Our side: nothing checked out, and the spare connection serves.
        assert db.pool_stats().in_use == 0
        assert (await db.aexecute_sql("SELECT 7")).fetchone()[0] == 7
        assert db.pool_stats().discarded_total.get("cancelled", 0) == 1
        assert await outside_count(backend, db, "ap_rel_user") == 1
        # Writers are not locked out by the cancelled transaction (busy_timeout 1 s).
        await m.User.acreate(name="after")
        assert await outside_count(backend, db, "ap_rel_user") == 2
        await assert_pool_normal(db)
        # Bounded: closing the pool does not wait for the cancelled statement to run out.
        try:
            await asyncio.wait_for(db.close_pool(timeout=2), 6)
        except TimeoutError:
            raise AssertionError("close_pool() waited for a cancelled SQLite statement "
                                 "to run to its end") from None
        assert (await db.aexecute_sql("SELECT 8")).fetchone()[0] == 8
    finally:
        if raw._thread.is_alive():
            try:  # the statement still runs: stop it, for the next tests' sake
                sqlite_conn.interrupt()
            except sqlite3.ProgrammingError:
                pass  # closed meanwhile
        await wait_until(lambda: not raw._thread.is_alive(), "aiosqlite's thread to end",
                         tries=1000)


# -- 6. reset on check-in --------------------------------------------------------------------


async def in_server_transaction(db: Any, backend: str) -> bool:
    """Whether the pinned connection is inside a transaction, as the server/driver sees it."""
    if backend == "mysql":
        return bool((await db.aexecute_sql("SELECT @@in_transaction")).fetchone()[0])
    return bool(db._scope().entry.conn.in_transaction())


async def test_open_transaction_rolled_back_at_checkin(make, backend):
    db, _m = await make(max_connections=1, timeout=10)
    p = db.param
    insert = f"INSERT INTO ap_rel_user (name, age) VALUES ({p}, {p})"
    async with db.connection() as conn:
        await conn.aexecute_sql("BEGIN")
        await conn.aexecute_sql(insert, ("ghost", 1))
        assert await in_server_transaction(db, backend)
    assert db.pool_stats().in_use == 0
    assert await outside_count(backend, db, "ap_rel_user") == 0
    opened = db.pool_stats().opened_total
    async with db.connection() as conn:  # the same connection (max_connections=1)
        assert not await in_server_transaction(db, backend)
        await conn.aexecute_sql(insert, ("real", 2))
        assert await outside_count(backend, db, "ap_rel_user") == 1  # autocommitted
    stats = db.pool_stats()
    assert stats.opened_total == opened == 1, "reset, not replaced"
    assert await outside_count(backend, db, "ap_rel_user", "WHERE name = 'ghost'") == 0
    await assert_pool_normal(db)


async def raw_reset(db: Any, backend: str, *statements: str) -> None:
    """Leave a transaction open on a pinned connection (with ``statements`` run in it),
    so it is rolled back at check-in."""
    async with db.connection() as conn:
        await conn.aexecute_sql("BEGIN")
        for sql in statements:
            await conn.aexecute_sql(sql)
        assert await in_server_transaction(db, backend)


async def on_every_connection(db: Any, n: int, check: Callable[[], Any]) -> list[Any]:
    """Run ``check`` on ``n`` connections held at once."""
    gate = asyncio.Event()
    results: list[Any] = []

    async def one() -> None:
        async with db.connection():
            results.append(await check())
            if len(results) == n:
                gate.set()
            await gate.wait()

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 20)
    return results


@pytest.mark.parametrize("backend", ["postgres"])
async def test_postgres_settings_hold_after_reset(db_factory, backend):
    await server_fetch(backend, "CREATE SCHEMA IF NOT EXISTS apeewee_s")
    try:
        db = db_factory(max_connections=3, timeout=10, isolation_level="serializable",
                        server_settings={"search_path": "apeewee_s,public", "timezone": "UTC"})

        async def settings() -> tuple[Any, ...]:
            row = (await db.aexecute_sql(
                "SELECT current_setting('search_path'), current_setting('TimeZone'), "
                "current_setting('default_transaction_isolation'), current_schema()")).fetchone()
            async with db.atomic():
                level = (await db.aexecute_sql("SHOW transaction_isolation")).fetchone()[0]
            return (*row, level)

        expected = ("apeewee_s,public", "UTC", "serializable", "apeewee_s", "serializable")
        assert await on_every_connection(db, 3, settings) == [expected] * 3
        await db.aexecute_sql("CREATE TABLE ap_rel_in_schema (id INTEGER)")
        rows = await server_fetch(backend, "SELECT table_schema FROM information_schema.tables "
                                  "WHERE table_name = 'ap_rel_in_schema'")
        assert rows == [("apeewee_s",)]
        # Changes made inside a transaction that is rolled back at check-in are undone.
        for _ in range(3):
            await raw_reset(db, "postgres", "INSERT INTO ap_rel_in_schema VALUES (1)",
                            "SET search_path TO public", "SET TIME ZONE 'Asia/Tokyo'",
                            "SET default_transaction_isolation TO 'read committed'")
        assert await on_every_connection(db, 3, settings) == [expected] * 3
        assert (await db.aexecute_sql("SELECT count(*) FROM ap_rel_in_schema")).fetchone()[0] == 0
        async with db.connection() as conn:  # a raw BEGIN too takes the default level
            await conn.aexecute_sql("BEGIN")
            level = (await conn.aexecute_sql("SHOW transaction_isolation")).fetchone()[0]
            await conn.aexecute_sql("ROLLBACK")
        assert level == "serializable"
        await assert_pool_normal(db)
    finally:
        await server_fetch(backend, "DROP SCHEMA apeewee_s CASCADE")


@pytest.mark.parametrize("backend", ["mysql"])
async def test_mysql_settings_hold_after_reset(make, backend):
    db, _m = await make(max_connections=3, timeout=10, isolation_level="serializable",
                       init_command="SET time_zone='+00:00'")

    async def settings() -> tuple[Any, ...]:
        row = (await db.aexecute_sql(
            "SELECT @@session.time_zone, @@session.tx_isolation, @@autocommit")).fetchone()
        return tuple(row)

    expected = ("+00:00", "SERIALIZABLE", 1)
    assert await on_every_connection(db, 3, settings) == [expected] * 3
    for _ in range(3):
        await raw_reset(db, backend, "INSERT INTO ap_rel_user (name, age) VALUES ('ghost', 1)")
    assert await on_every_connection(db, 3, settings) == [expected] * 3
    assert await outside_count(backend, db, "ap_rel_user") == 0
    await assert_pool_normal(db)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_pragmas_hold_after_reset(make, backend):
    db, _m = await make(max_connections=3, timeout=10,
                       pragmas={"journal_mode": "wal", "cache_size": -3000,
                                "foreign_keys": 1, "busy_timeout": 1234})

    async def settings() -> tuple[Any, ...]:
        values = []
        for name in ("journal_mode", "cache_size", "foreign_keys", "busy_timeout"):
            values.append((await db.aexecute_sql(f"PRAGMA {name}")).fetchone()[0])
        return tuple(values)

    expected = ("wal", -3000, 1, 1234)
    assert await on_every_connection(db, 3, settings) == [expected] * 3
    for _ in range(3):
        await raw_reset(db, backend, "INSERT INTO ap_rel_user (name, age) VALUES ('ghost', 1)")
    assert await on_every_connection(db, 3, settings) == [expected] * 3
    assert db.pool_stats().opened_total == 3
    assert await outside_count(backend, db, "ap_rel_user") == 0
    await assert_pool_normal(db)


# -- 7. leaks --------------------------------------------------------------------------------


def pool_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "apeewee.pool" and r.levelno == logging.WARNING]


async def test_leak_warning_names_task_and_stack(db_factory, caplog):
    caplog.set_level(logging.WARNING, logger="apeewee.pool")
    db = db_factory(max_connections=2, leak_timeout=0.2, timeout=10)

    async def slow_holder_x() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            await asyncio.sleep(0.5)

    await asyncio.create_task(slow_holder_x(), name="holder-x")
    leaks = [w for w in pool_warnings(caplog) if "holder-x" in w]
    assert len(leaks) == 1, pool_warnings(caplog)
    assert "leak_timeout=0.2" in leaks[0]
    assert __file__ in leaks[0] and "in slow_holder_x" in leaks[0], leaks[0]
    await assert_pool_normal(db)


async def test_leak_warning_for_a_connection_handed_over_to_a_waiter(db_factory, caplog):
    caplog.set_level(logging.WARNING, logger="apeewee.pool")
    db = db_factory(max_connections=1, leak_timeout=0.3, timeout=10)
    holding = asyncio.Event()

    async def brief_holder_a() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            holding.set()
            await wait_until(lambda: db.pool_stats().waiting == 1, "the waiter")

    async def waiting_holder_b() -> None:
        await holding.wait()
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            await asyncio.sleep(0.6)

    await asyncio.gather(asyncio.create_task(brief_holder_a(), name="holder-a"),
                         asyncio.create_task(waiting_holder_b(), name="holder-b"))
    leaks = pool_warnings(caplog)
    assert len(leaks) == 1, leaks
    assert "by task holder-b" in leaks[0]
    # The stack is the one that acquired the connection (the waiter's), not the stack of
    # the task that happened to release it.
    assert "in waiting_holder_b" in leaks[0], leaks[0]
    assert "in brief_holder_a" not in leaks[0], leaks[0]
    await assert_pool_normal(db)


async def test_pool_timeout_lists_holders(db_factory):
    db = db_factory(max_connections=5, timeout=0.2)
    await db.aexecute_sql("SELECT 1")
    gate = asyncio.Event()

    async def hold() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            await gate.wait()

    holders = [asyncio.create_task(hold(), name=f"holder-{i}") for i in range(5)]
    try:
        await wait_until(lambda: db.pool_stats().in_use == 5, "5 connections in use")
        with pytest.raises(apeewee.PoolTimeout) as info:
            await db.aexecute_sql("SELECT 1")
        with pytest.raises(apeewee.PoolTimeout):
            async with db.atomic():
                pass
    finally:
        gate.set()
        await asyncio.gather(*holders)
    message = str(info.value)
    assert "max_connections=5" in message and "5 in use" in message, message
    for i in range(5):
        assert re.search(rf"holder-{i} \(\d+\.\d s\)", message), message
    stats = db.pool_stats()
    assert stats.timeouts_total == 2
    await assert_pool_normal(db)


async def test_task_ending_with_a_pinned_connection_returns_it(make, backend):
    db, m = await make(max_connections=2, timeout=10)
    p = db.param

    async def forgetful() -> None:
        await db.aconnect()
        await db.aexecute_sql("BEGIN")
        await db.aexecute_sql(f"INSERT INTO ap_rel_user (name, age) VALUES ({p}, {p})", ("lost", 1))
        assert await in_server_transaction(db, backend)

    async def forgetful_clean() -> None:
        await db.aconnect()
        await db.aexecute_sql("SELECT 1")

    await asyncio.create_task(forgetful(), name="forgetful")
    await asyncio.create_task(forgetful_clean(), name="forgetful-clean")
    await wait_until(lambda: db.pool_stats().in_use == 0, "the pinned connections to return")
    assert await outside_count(backend, db, "ap_rel_user") == 0
    for _ in range(2):  # whichever connection serves, it is not left in a transaction
        await m.User.acreate(name=f"kept{uuid.uuid4().hex[:6]}")
    assert await outside_count(backend, db, "ap_rel_user") == 2
    stats = db.pool_stats()
    assert stats.opened_total == 2 and stats.discarded_total == {}, stats
    await assert_pool_normal(db)


# -- 8. exhaustion ---------------------------------------------------------------------------


async def test_thousand_tasks_over_five_connections_in_arrival_order(db_factory):
    db = db_factory(max_connections=5)
    await db.aexecute_sql("SELECT 1")
    gate = asyncio.Event()

    async def hold() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            await gate.wait()

    holders = [asyncio.create_task(hold()) for _ in range(5)]
    await wait_until(lambda: db.pool_stats().in_use == 5, "5 connections in use")
    order: list[int] = []

    async def work(i: int) -> int:
        async with db.connection():
            order.append(i)
            return int((await db.aexecute_sql("SELECT 1")).fetchone()[0])

    async with asyncio.timeout(60):
        workers = [asyncio.create_task(work(i)) for i in range(1000)]
        await wait_until(lambda: db.pool_stats().waiting == 1000, "1000 waiters", tries=1000)
        gate.set()
        results = await asyncio.gather(*workers, *holders)
    assert results[:1000] == [1] * 1000
    assert order == list(range(1000)), "waiters must be served in arrival order"
    stats = db.pool_stats()
    assert (stats.open, stats.in_use, stats.waiting, stats.opened_total) == (5, 0, 0, 5)
    assert stats.acquired_total == 1 + 5 + 1000
    assert stats.wait_time_max > 0 and stats.wait_time_total >= stats.wait_time_max
    await assert_pool_normal(db)


# -- 9. figures ------------------------------------------------------------------------------


async def test_pool_stats_figures_after_a_scenario(db_factory):
    db = db_factory(max_connections=2, min_connections=1, timeout=0.2)
    fields = {f.name for f in dataclasses.fields(apeewee.PoolStats)}
    assert fields == {"max", "min", "open", "idle", "in_use", "waiting", "opening",
                      "opened_total", "closed_total", "acquired_total", "timeouts_total",
                      "discarded_total", "wait_time_total", "wait_time_max"}
    await db.aexecute_sql("SELECT 1")
    # The background fill of min_connections and the first query may both open one.
    await wait_until(lambda: db.pool_stats().open >= 1 and db.pool_stats().opening == 0,
                     "the pool to settle")
    gate = asyncio.Event()

    async def hold() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            await gate.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await wait_until(lambda: db.pool_stats().in_use == 2, "2 connections in use")
    mid = db.pool_stats()
    assert (mid.open, mid.idle, mid.in_use, mid.waiting) == (2, 0, 2, 0)
    with pytest.raises(apeewee.PoolTimeout):
        await db.aexecute_sql("SELECT 1")  # waits 0.2 s, times out
    waiter = asyncio.create_task(db.aexecute_sql("SELECT 1"))
    await wait_until(lambda: db.pool_stats().waiting == 1, "a waiter")
    gate.set()
    await asyncio.gather(*holders, waiter)  # the waiter is served by a released connection
    closed = await db.close_idle()
    assert closed == 2
    await wait_until(lambda: db.pool_stats().idle == 1, "min_connections refilled")
    stats = db.pool_stats()
    for name in fields:
        assert name in stats.as_dict() and stats[name] == getattr(stats, name)
    assert (stats.max, stats.min) == (2, 1)
    assert (stats.open, stats.idle, stats.in_use, stats.waiting, stats.opening) == (1, 1, 0, 0, 0)
    assert stats.opened_total == 3  # 2 (the most ever open), then 1 refilled after close_idle()
    assert stats.closed_total == 2
    assert stats.discarded_total == {"closed idle": 2}
    assert stats.acquired_total == 1 + 2 + 1  # the timed-out one never got one
    assert stats.timeouts_total == 1
    assert stats.wait_time_total > stats.wait_time_max > 0  # two waits, one timed out
    await assert_pool_normal(db)


# -- 10. retried conflicts ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"])
async def test_serializable_conflicts_retried_to_an_exact_count(make, backend):
    db, m = await make(max_connections=10, timeout=30)
    C = m.Counter
    await C.acreate(key="k", value=0)
    calls = 0
    barrier = asyncio.Barrier(10)
    first_try: set[int] = set()

    @db.atomic(retries=20, isolation_level="serializable")
    async def bump(i: int) -> None:
        nonlocal calls
        calls += 1
        row = await C.aget(C.key == "k")
        if i not in first_try:  # all read before anyone writes, the first time
            first_try.add(i)
            await barrier.wait()
        await C.aupdate(value=row.value + 1).where(C.key == "k")

    async with asyncio.timeout(30):
        await asyncio.gather(*(bump(i) for i in range(10)))
    assert (await C.aget_by_id("k")).value == 10
    assert await outside_count(backend, db, "ap_rel_counter", "WHERE value = 10") == 1
    assert calls > 10, "no serialization failure was retried"
    await assert_pool_normal(db)


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.parametrize("retries", [5, 0])
async def test_deadlock_retried(make, backend, retries):
    extra = {"server_settings": {"deadlock_timeout": "100ms"}} if backend == "postgres" else {}
    db, m = await make(max_connections=4, timeout=30, **extra)
    C = m.Counter
    await C.acreate(key="a", value=0)
    await C.acreate(key="b", value=0)
    barrier = asyncio.Barrier(2)
    calls = {"ab": 0, "ba": 0}

    async def lock_both(first: str, second: str) -> None:
        name = first + second
        calls[name] += 1
        await C.aselect().where(C.key == first).for_update().aget()
        if calls[name] == 1:
            await barrier.wait()  # each holds its first row: opposite orders deadlock
        await C.aselect().where(C.key == second).for_update().aget()
        await C.aupdate(value=C.value + 1).where(C.key.in_([first, second]))

    worker = db.atomic(retries=retries)(lock_both) if retries else db.atomic()(lock_both)
    async with asyncio.timeout(30):
        results = await asyncio.gather(worker("a", "b"), worker("b", "a"),
                                       return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    values = {c.key: c.value for c in await C.aselect()}
    if retries:
        assert errors == []
        assert values == {"a": 2, "b": 2}
        assert sum(calls.values()) == 3, calls  # the deadlock victim ran once more
    else:
        assert len(errors) == 1, results
        assert isinstance(errors[0], peewee.OperationalError)
        cause = errors[0].__cause__
        if backend == "mysql":
            assert cause is not None and cause.args[0] == 1213, repr(cause)
        else:
            assert getattr(cause, "sqlstate", None) == "40P01", repr(cause)
        assert values == {"a": 1, "b": 1}
        assert calls == {"ab": 1, "ba": 1}
    await assert_pool_normal(db)


async def test_retry_only_as_outermost_transaction(make, backend, tmp_path):
    extra = {"pragmas": {"journal_mode": "wal", "busy_timeout": 20}} if backend == "sqlite" else {}
    db, m = await make(max_connections=3, timeout=10, **extra)
    locker: sqlite3.Connection | None = None
    calls = 0
    fail_first = 0

    async def conflict() -> None:
        """Fail with the backend's transient error while ``calls <= fail_first``."""
        nonlocal locker
        if backend == "postgres":
            if calls <= fail_first:
                await db.aexecute_sql("DO $$ BEGIN RAISE EXCEPTION 'conflict' "
                                      "USING ERRCODE = '40001'; END $$")
        elif backend == "mysql":
            if calls <= fail_first:
                await db.aexecute_sql("SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, "
                                      "MESSAGE_TEXT = 'conflict'")
        else:
            if calls > fail_first and locker is not None:
                locker.rollback()
                locker.close()
                locker = None
            await db.aexecute_sql("UPDATE ap_rel_counter SET value = value + 1")

    def lock_sqlite() -> None:
        nonlocal locker
        if backend == "sqlite":
            locker = sqlite3.connect(db.database, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")

    @db.atomic(retries=3, backoff=0.001)
    async def decorated() -> str:
        nonlocal calls
        calls += 1
        await conflict()
        return "done"

    try:
        # Outermost: retried until it succeeds...
        fail_first, calls = 2, 0
        lock_sqlite()
        assert await decorated() == "done"
        assert calls == 3
        # ... or until the retries are used up.
        fail_first, calls = 99, 0
        lock_sqlite()
        with pytest.raises(peewee.OperationalError):
            await decorated()
        assert calls == 4
        # Inside an outer transaction: never retried (a savepoint cannot be re-run alone).
        fail_first, calls = 99, 0
        with pytest.raises(peewee.OperationalError):
            async with db.atomic():
                if backend != "sqlite":
                    await m.User.acreate(name="outer")
                await decorated()
        assert calls == 1
    finally:
        if locker is not None:
            locker.rollback()
            locker.close()
    assert await outside_count(backend, db, "ap_rel_user") == 0
    with pytest.raises(TypeError):
        async with db.atomic(retries=3):
            pass
    await assert_pool_normal(db)


async def test_for_update_counter_ends_exact(make, backend):
    db, m = await make(max_connections=5, timeout=60)
    C = m.Counter
    await C.acreate(key="hits", value=0)
    kwargs = {"lock_type": "immediate"} if backend == "sqlite" else {}

    async def increment() -> None:
        async with db.atomic(**kwargs):
            query = C.aselect().where(C.key == "hits")
            if backend != "sqlite":
                query = query.for_update()
            row = await query.aget()
            await asyncio.sleep(0)  # invite interleaving
            await C.aupdate(value=row.value + 1).where(C.key == "hits")

    async with asyncio.timeout(30):
        await asyncio.gather(*(increment() for _ in range(50)))
    assert (await C.aget_by_id("hits")).value == 50
    assert await outside_count(backend, db, "ap_rel_counter", "WHERE value = 50") == 1
    await assert_pool_normal(db)


# -- 11. shutdown ----------------------------------------------------------------------------


async def test_close_pool_lets_in_flight_work_finish(db_factory, backend):
    db = db_factory(max_connections=1, timeout=10)
    if backend == "sqlite":
        db.register_function(lambda s: time.sleep(s) or 0, "app_sleep", 1)
        slow = "SELECT app_sleep(0.5)"
    elif backend == "postgres":
        slow = "SELECT pg_sleep(0.5)"
    else:
        slow = "SELECT SLEEP(0.5)"
    await db.aexecute_sql("SELECT 1")
    in_flight = asyncio.create_task(db.aexecute_sql(slow))
    await wait_until(lambda: db.pool_stats().in_use == 1, "the slow statement to start")
    queued = asyncio.create_task(db.aexecute_sql("SELECT 1"))
    await wait_until(lambda: db.pool_stats().waiting == 1, "a waiter")
    closer = asyncio.create_task(db.close_pool(timeout=2))
    await wait_until(lambda: db._current_pool() is not None and db._current_pool().closing,
                     "the pool to be closing")
    with pytest.raises(apeewee.PoolClosed):
        await queued  # waiting when shutdown began
    for attempt in (lambda: db.aexecute_sql("SELECT 1"), db.connection, db.atomic):
        with pytest.raises(apeewee.PoolClosed):
            result = attempt()
            if hasattr(result, "__aenter__"):
                async with result:
                    pass
            else:
                await result
        assert not in_flight.done() and not closer.done(), "PoolClosed must come at once"
    assert (await in_flight).fetchone()[0] in (0, None)
    await closer
    # A new pool serves after close_pool() returned.
    assert (await db.aexecute_sql("SELECT 8")).fetchone()[0] == 8
    stats = db.pool_stats()
    assert (stats.opened_total, stats.in_use) == (1, 0)
    await assert_pool_normal(db)


# -- 12. logging -----------------------------------------------------------------------------


async def test_debug_logging_of_opens_and_closes(db_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="apeewee.pool")
    db = db_factory(max_connections=2, stale_timeout=0.2, timeout=10)
    await db.aexecute_sql("SELECT 1")
    await asyncio.sleep(0.3)  # stale now
    await db.aexecute_sql("SELECT 1")  # the stale one is closed, a new one opened
    assert await db.close_idle() == 1
    messages = [r.getMessage() for r in caplog.records
                if r.name == "apeewee.pool" and r.levelno == logging.DEBUG]
    assert sum(m.startswith("opened ") for m in messages) == 2, messages
    assert any(m.startswith("closing ") and m.endswith(": stale") for m in messages), messages
    assert any(m.startswith("closing ") and m.endswith(": closed idle") for m in messages), \
        messages
    await assert_pool_normal(db)

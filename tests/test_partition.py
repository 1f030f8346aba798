"""A silent network is bounded (README, Reliability): apeewee talks to a throwaway
PostgreSQL / MariaDB through faults.TcpProxy, which can stop forwarding without FIN or RST
(``partition()``), resume (``heal()``) and reset every connection (``cut()``).

Nothing hangs forever: connects give up after ``connect_timeout``, acquisitions after
``timeout``, statements after ``query_timeout``; at most ``max_connections`` connection
attempts are in flight; TCP keepalive with short probes is on; once the network heals
queries succeed again without any manual action, and connections that were cut are
replaced invisibly.

The proxy's black hole is application-level (the kernel still ACKs), so keepalive probes
are answered during a partition: here only apeewee's own timeouts can end a wait, which
is exactly what these tests check. Keepalive itself is checked on the sockets.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import Any

import peewee
import pytest
from conftest import BACKENDS
from faults import (
    TcpProxy,
    throwaway_mariadb_fixture,  # noqa: F401  (fixtures: function scope over module scope)
    throwaway_mariadb_server_fixture,  # noqa: F401
    throwaway_pg_fixture,  # noqa: F401
    throwaway_pg_server_fixture,  # noqa: F401
)
from helpers import wait_until

import apeewee

SERVERS = [b for b in ("postgres", "mysql") if b in BACKENDS]


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
def server(backend: str, request: pytest.FixtureRequest) -> Any:
    """The module's throwaway server for ``backend``, running."""
    name = "throwaway_pg" if backend == "postgres" else "throwaway_mariadb"
    return request.getfixturevalue(name)


@pytest.fixture
async def proxy(server: Any) -> Any:
    """A TcpProxy in front of the throwaway server, on the test's loop."""
    async with TcpProxy(*server.address) as p:
        yield p
        p.heal()  # never leave a partition behind for the pools' shutdown
    assert p.errors == [], p.errors


@pytest.fixture
async def make_db(backend: str, server: Any, proxy: Any) -> Any:
    """Make apeewee databases that reach the server through the proxy; their pools are
    closed after the test (after a heal, before the proxy closes)."""
    made: list[Any] = []

    def factory(**options: Any) -> Any:
        cls = apeewee.PostgresqlDatabase if backend == "postgres" else apeewee.MySQLDatabase
        db = cls(**server.params(port=proxy.port), **options)
        made.append(db)
        return db

    yield factory
    proxy.heal()
    for db in made:
        await db.close_pool(timeout=5)


def item_model(db: Any) -> Any:
    """Rows with a caller-chosen, deliberately non-unique ``uid``: a write that ran twice
    shows up as two rows."""

    class Item(apeewee.Model):
        uid = peewee.BigIntegerField(index=True)

        class Meta:
            database = db
            table_name = "fault_partition_item"

    return Item


async def fresh_table(db: Any) -> Any:
    Item = item_model(db)
    await db.adrop_tables([Item])
    await db.acreate_tables([Item])
    return Item


async def uids(Item: Any) -> list[int]:
    return [uid for (uid,) in await Item.aselect(Item.uid).tuples()]


async def hold_connections(db: Any, n: int) -> None:
    """Check out ``n`` connections at once (so the pool opens ``n``), then return them."""
    gate = asyncio.Event()

    async def hold() -> None:
        async with db.connection():
            await db.aexecute_sql("SELECT 1")
            await gate.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(n)]
    try:
        await wait_until(lambda: db.pool_stats().in_use == n, f"{n} connections in use")
    finally:
        gate.set()
        await asyncio.gather(*tasks)


async def assert_pool_normal(db: Any) -> None:
    """Nothing checked out, opening or waiting; a query works."""
    await wait_until(lambda: db.pool_stats().in_use == 0 and db.pool_stats().opening == 0,
                     "in_use and opening back to 0")
    assert (await db.aexecute_sql("SELECT 1")).fetchone()[0] == 1
    stats = db.pool_stats()
    assert (stats.in_use, stats.waiting, stats.opening) == (0, 0, 0), stats
    assert 1 <= stats.open <= stats.max, stats


# -- statements during a partition are bounded; the pool recovers after the heal -------------


@pytest.mark.parametrize("backend", SERVERS)
async def test_partition_bounds_every_statement_and_heal_recovers(make_db, backend, proxy):
    db = make_db(max_connections=4, query_timeout=0.5, connect_timeout=1.0, timeout=2.0,
                 ping_after=0)
    Item = await fresh_table(db)
    await Item.ainsert(uid=1)  # committed before the partition: must survive
    await hold_connections(db, 3)  # idle connections for the partition to strand

    partitioned = asyncio.Event()
    outcomes: dict[str, BaseException | str] = {}

    async def pinned() -> None:  # a pinned connection in use when the network goes silent
        try:
            async with db.connection():
                await db.aexecute_sql("SELECT 1")
                await partitioned.wait()
                await db.aexecute_sql("SELECT 2")
            outcomes["pinned"] = "succeeded"
        except Exception as exc:
            outcomes["pinned"] = exc

    async def in_transaction() -> None:  # a transaction open across the partition
        try:
            async with db.atomic():
                await Item.ainsert(uid=2)
                await partitioned.wait()
                await Item.ainsert(uid=3)
            outcomes["transaction"] = "committed"
        except Exception as exc:
            outcomes["transaction"] = exc

    async with asyncio.timeout(20):  # nothing may hang
        holders = [asyncio.create_task(pinned()), asyncio.create_task(in_transaction())]
        await wait_until(lambda: db.pool_stats().in_use == 2, "two connections pinned")
        proxy.partition()
        partitioned.set()
        results = await asyncio.gather(
            *(db.aexecute_sql("SELECT 1") for _ in range(3)),
            *(Item.ainsert(uid=100 + i) for i in range(3)),
            return_exceptions=True)
        await asyncio.gather(*holders)

    wrong = [r for r in [*results, *outcomes.values()]
             if not isinstance(r, peewee.OperationalError)]
    assert not wrong, f"during the partition, not OperationalError: {wrong!r}"
    assert isinstance(outcomes["pinned"], apeewee.QueryTimeout), outcomes
    assert isinstance(outcomes["transaction"], apeewee.QueryTimeout), outcomes
    await wait_until(lambda: db.pool_stats().in_use == 0, "in_use back to 0")

    proxy.heal()
    async with asyncio.timeout(20):
        assert (await db.aexecute_sql("SELECT 42")).fetchone()[0] == 42
        await Item.ainsert(uid=4)
        present = await uids(Item)
    twice = [u for u, n in collections.Counter(present).items() if n > 1]
    assert not twice, f"rows written twice: {twice}"
    assert {1, 4} <= set(present)
    assert not {2, 3} & set(present), "the interrupted transaction's writes are visible"
    assert set(present) <= {1, 4, 100, 101, 102}  # a timed-out insert's outcome is unknown
    await assert_pool_normal(db)


# -- connecting during a partition is bounded ------------------------------------------------


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.parametrize("pool_timeout", [2.0, None], ids=["timeout2", "notimeout"])
async def test_connect_during_partition_is_bounded(make_db, backend, proxy, pool_timeout):
    """With an empty pool the first query must connect; through a silent network that
    gives up after ``connect_timeout`` (PoolTimeout first if ``timeout`` is shorter). With
    the default ``timeout=None`` only ``connect_timeout`` bounds it ("connects give up after
    connect_timeout")."""
    connect_timeout = 1.0
    db = make_db(max_connections=3, connect_timeout=connect_timeout, timeout=pool_timeout,
                 ping_after=0)
    proxy.partition()
    with pytest.raises(peewee.OperationalError) as info:
        async with asyncio.timeout(connect_timeout + (pool_timeout or 0) + 5):
            await db.aexecute_sql("SELECT 1")
    if pool_timeout is None:
        assert not isinstance(info.value, apeewee.PoolTimeout), info.value
    stats = db.pool_stats()
    assert (stats.in_use, stats.opening, stats.open) == (0, 0, 0), stats
    proxy.heal()
    await assert_pool_normal(db)


@pytest.mark.parametrize("backend", SERVERS)
async def test_connection_attempts_during_partition_do_not_pile_up(make_db, backend, proxy):
    db = make_db(max_connections=5, timeout=1.0, connect_timeout=1.0, ping_after=0)
    proxy.partition()
    peaks = {"opening": 0, "size": 0}
    done = asyncio.Event()

    async def sample() -> None:
        for _ in range(1_000_000):  # bounded; ends when the queries have all finished
            if done.is_set():
                return
            s = db.pool_stats()
            peaks["opening"] = max(peaks["opening"], s.opening)
            peaks["size"] = max(peaks["size"], s.open + s.opening)
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    try:
        async with asyncio.timeout(15):
            results = await asyncio.gather(
                *(db.aexecute_sql("SELECT 1") for _ in range(50)), return_exceptions=True)
    finally:
        done.set()
        await sampler
    wrong = [r for r in results if not isinstance(r, peewee.OperationalError)]
    assert not wrong, f"{len(wrong)} of 50 did not fail with OperationalError: {wrong[:3]!r}"
    assert 1 <= peaks["opening"] <= 5, peaks  # attempts were made, never more than 5
    assert peaks["size"] <= 5, peaks
    stats = db.pool_stats()
    assert (stats.in_use, stats.waiting, stats.opening) == (0, 0, 0), stats
    proxy.heal()
    await assert_pool_normal(db)


@pytest.mark.parametrize("backend", SERVERS)
async def test_acquisition_during_partition_is_bounded_by_timeout(make_db, backend, proxy):
    """Idle connections stranded by a partition are pinged at checkout (``ping_after=0``);
    each ping is bounded (by min(connect_timeout, 5 s)), and so must be the acquisition as
    a whole: ``timeout`` is "seconds a task may wait for a connection, connecting
    included". Allowed here: ``timeout`` plus one ping's bound plus 2 s of slack."""
    timeout, connect_timeout = 1.0, 3.0
    db = make_db(max_connections=4, timeout=timeout, connect_timeout=connect_timeout,
                 ping_after=0)
    await hold_connections(db, 4)
    proxy.partition()
    with pytest.raises(peewee.OperationalError):
        async with asyncio.timeout(timeout + connect_timeout + 2):
            await db.aexecute_sql("SELECT 1")
    proxy.heal()
    await assert_pool_normal(db)


# -- TCP keepalive ---------------------------------------------------------------------------


def driver_socket(backend: str, raw: Any) -> Any:
    transport = raw._transport if backend == "postgres" else raw._writer
    sock = transport.get_extra_info("socket")
    assert sock is not None and sock.family == socket.AF_INET
    return sock


@pytest.mark.parametrize("backend", SERVERS)
async def test_pool_sockets_have_short_tcp_keepalive(make_db, backend):
    db = make_db(max_connections=3, timeout=5.0)
    gate = asyncio.Event()
    options: list[dict[str, int]] = []

    async def hold() -> None:
        async with db.connection() as conn:
            await db.aexecute_sql("SELECT 1")
            sock = driver_socket(backend, conn.raw)
            options.append({
                "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "TCP_KEEPIDLE": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "TCP_KEEPINTVL": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "TCP_KEEPCNT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "TCP_USER_TIMEOUT": sock.getsockopt(socket.IPPROTO_TCP,
                                                    socket.TCP_USER_TIMEOUT),
            })
            await gate.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(3)]
    try:
        await wait_until(lambda: len(options) == 3, "three connections checked out")
    finally:
        gate.set()
        await asyncio.gather(*tasks)
    for opts in options:  # README: probes after 15 s idle, every 5 s, 3 tries; 30 s
        assert opts["SO_KEEPALIVE"] == 1, opts
        assert 0 < opts["TCP_KEEPIDLE"] <= 15, opts
        assert 0 < opts["TCP_KEEPINTVL"] <= 5, opts
        assert 0 < opts["TCP_KEEPCNT"] <= 3, opts
        assert 0 < opts["TCP_USER_TIMEOUT"] <= 30_000, opts


# -- connections cut while partitioned are replaced invisibly after the heal -----------------


@pytest.mark.parametrize("backend", SERVERS)
@pytest.mark.parametrize("ping_after", [0, None], ids=["ping0", "noping"])
async def test_cut_connections_are_replaced_invisibly_after_heal(make_db, backend, proxy,
                                                                  ping_after):
    """A proxy's cut (RST) while partitioned, then a heal: the next statements, a write
    first (never re-run when its outcome is unknown), succeed on fresh connections. With
    ``ping_after=0`` the checkout ping finds the dead connection; without pings "a
    connection the server killed (restart, ..., a proxy's idle cut) is discarded at
    checkout" all the same."""
    db = make_db(max_connections=3, timeout=5.0, connect_timeout=2.0, ping_after=ping_after)
    Item = await fresh_table(db)
    await hold_connections(db, 3)
    opened = db.pool_stats().opened_total
    proxy.partition()
    assert await proxy.cut() == 3
    proxy.heal()
    async with asyncio.timeout(15):
        await Item.ainsert(uid=1)
        await Item.ainsert(uid=2)
        assert (await db.aexecute_sql("SELECT 42")).fetchone()[0] == 42
        assert sorted(await uids(Item)) == [1, 2]
    stats = db.pool_stats()
    assert stats.opened_total > opened, stats
    assert stats.discarded_total.get("dead", 0) >= 1, stats.discarded_total
    await assert_pool_normal(db)

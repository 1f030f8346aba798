"""Self-tests of the fault-injection helpers in faults.py (no apeewee here): throwaway
servers start, stop, restart, crash and clean up; the TCP proxy forwards, partitions,
heals and cuts. Raw asyncpg / aiomysql only; nothing touches the shared servers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import aiomysql
import asyncpg
import pymysql
import pytest
from faults import (
    SHARED_PORTS,
    TMP_ROOT,
    FaultInfraError,
    TcpProxy,
    ThrowawayMariaDB,
    ThrowawayPostgres,
    free_port,
    throwaway_mariadb_fixture,  # noqa: F401  (fixtures: function scope over module scope)
    throwaway_mariadb_server_fixture,  # noqa: F401
    throwaway_pg_fixture,  # noqa: F401
    throwaway_pg_server_fixture,  # noqa: F401
)

PG_GONE = (OSError, asyncpg.InterfaceError, asyncpg.PostgresError)


# --- helpers --------------------------------------------------------------------------


async def pg_connect(server: ThrowawayPostgres, **overrides: object) -> asyncpg.Connection:
    return await asyncpg.connect(**server.params(**overrides), timeout=5)


async def my_connect(server: ThrowawayMariaDB, **overrides: object) -> aiomysql.Connection:
    return await aiomysql.connect(**server.aiomysql_params(**overrides), connect_timeout=5,
                                  autocommit=True)


async def my_query(conn: aiomysql.Connection, sql: str) -> list[tuple[object, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql)
        return list(await cur.fetchall())


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def check_private_dir(server: ThrowawayPostgres | ThrowawayMariaDB, os_user: str) -> None:
    assert server.base_dir is not None
    assert os.path.dirname(server.base_dir) == TMP_ROOT
    if os.geteuid() == 0:  # the server runs as its OS user, owning its dir
        import pwd
        assert os.stat(server.base_dir).st_uid == pwd.getpwnam(os_user).pw_uid


# --- PostgreSQL -----------------------------------------------------------------------


async def test_pg_is_private_loopback_and_has_db_test(throwaway_pg):
    pg = throwaway_pg
    assert pg.host == "127.0.0.1" and pg.port not in SHARED_PORTS
    assert pg.params() == {"host": "127.0.0.1", "port": pg.port, "user": "postgres",
                           "database": "test"}
    assert pg.dsn() == f"postgresql://postgres@127.0.0.1:{pg.port}/test"
    check_private_dir(pg, "postgres")
    conn = await pg_connect(pg)
    try:
        assert await conn.fetchval("SELECT current_database()") == "test"
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SHOW fsync") == "off"
        assert await conn.fetchval("SHOW data_directory") == os.path.join(pg.base_dir, "data")
    finally:
        await conn.close()
    assert pg.execute("SELECT 40 + 2").strip() == "42"


async def test_pg_stop_start_restart_keep_port_and_data(throwaway_pg):
    pg = throwaway_pg
    port = pg.port
    conn = await pg_connect(pg)
    await conn.execute("DROP TABLE IF EXISTS t; CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    pg.stop("fast")
    assert not pg.running and pg.pid is None
    with pytest.raises(PG_GONE):  # the open connection was closed by the shutdown
        await conn.fetchval("SELECT 1")
    conn.terminate()
    with pytest.raises(OSError):  # nothing listens any more
        await pg_connect(pg)
    pg.start()
    assert pg.port == port
    conn = await pg_connect(pg)
    try:
        assert await conn.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await conn.close()
    for mode in ("fast", "immediate"):
        pid = pg.pid
        pg.restart(mode)
        assert pg.running and pg.pid != pid and pg.port == port
    conn = await pg_connect(pg)
    try:
        assert await conn.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await conn.close()


async def test_pg_kill_then_start_recovers(throwaway_pg):
    pg = throwaway_pg
    conn = await pg_connect(pg)
    await conn.execute("DROP TABLE IF EXISTS k; CREATE TABLE k (x int); INSERT INTO k VALUES (7)")
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    postmaster = pg.pid
    await pg.akill()  # on the loop: the client sees its connection die meanwhile
    assert process_gone(postmaster) and process_gone(backend)
    with pytest.raises(PG_GONE):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    await pg.astart()  # crash recovery, same port
    conn = await pg_connect(pg)
    try:
        assert await conn.fetchval("SELECT x FROM k") == 7
    finally:
        await conn.close()


async def test_pg_smart_stop_waits_for_clients_on_the_loop(throwaway_pg):
    pg = throwaway_pg
    conn = await pg_connect(pg)
    stopping = asyncio.create_task(pg.astop("smart", timeout=10))
    await asyncio.sleep(0.3)
    assert not stopping.done() and pg.running  # a smart stop waits for the session
    await conn.close()
    async with asyncio.timeout(10):
        await stopping
    assert not pg.running
    await pg.astart()
    assert pg.running


async def test_pg_terminate_connections(throwaway_pg):
    pg = throwaway_pg
    conn = await pg_connect(pg)
    try:
        assert pg.terminate_connections() == 1
        with pytest.raises(PG_GONE):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    assert pg.running


def test_pg_context_manager_removes_everything_even_on_failure():
    with pytest.raises(RuntimeError, match="boom"), ThrowawayPostgres() as pg:
        pid, base_dir = pg.pid, pg.base_dir
        assert pid is not None and base_dir is not None and os.path.isdir(base_dir)
        raise RuntimeError("boom")
    assert process_gone(pid)
    assert not os.path.exists(base_dir)
    pg.close()  # idempotent


def test_server_refuses_shared_ports():
    for port in SHARED_PORTS:
        with pytest.raises(ValueError):
            ThrowawayPostgres(port=port)
        with pytest.raises(ValueError):
            ThrowawayMariaDB(port=port)
    assert free_port() not in SHARED_PORTS


# --- MariaDB --------------------------------------------------------------------------


async def test_mariadb_is_private_loopback_and_has_db_test(throwaway_mariadb):
    my = throwaway_mariadb
    assert my.host == "127.0.0.1" and my.port not in SHARED_PORTS
    assert my.params() == {"host": "127.0.0.1", "port": my.port, "user": "root",
                           "password": "", "database": "test"}
    assert my.dsn() == f"mysql://root@127.0.0.1:{my.port}/test"
    check_private_dir(my, "mysql")
    conn = await my_connect(my)
    try:
        rows = await my_query(conn, "SELECT DATABASE(), @@port, @@bind_address, @@datadir")
        assert rows[0][:3] == ("test", my.port, "127.0.0.1")
        assert os.path.realpath(rows[0][3]) == os.path.realpath(os.path.join(my.base_dir, "data"))
    finally:
        conn.close()
    assert my.execute("SELECT 40 + 2").strip() == "42"


async def test_mariadb_stop_start_restart_kill_keep_port_and_data(throwaway_mariadb):
    my = throwaway_mariadb
    port = my.port
    conn = await my_connect(my)
    try:
        await my_query(conn, "CREATE TABLE t (x int) ENGINE=InnoDB")
        await my_query(conn, "INSERT INTO t VALUES (1)")
    finally:
        conn.close()
    my.stop("fast")
    assert not my.running
    with pytest.raises(pymysql.err.OperationalError):
        await my_connect(my)
    my.start()
    for how in ("fast", "immediate", "kill"):
        pid = my.pid
        my.restart(how)
        assert my.running and my.pid != pid and my.port == port
    conn = await my_connect(my)
    try:
        pid = my.pid
        await my.akill()
        assert process_gone(pid)
        with pytest.raises(pymysql.err.OperationalError):
            await my_query(conn, "SELECT 1")
    finally:
        conn.close()
    await my.astart()  # InnoDB crash recovery, same port
    conn = await my_connect(my)
    try:
        assert await my_query(conn, "SELECT x FROM t") == [(1,)]
    finally:
        conn.close()


async def test_mariadb_terminate_connections(throwaway_mariadb):
    my = throwaway_mariadb
    conn = await my_connect(my)
    try:
        assert my.terminate_connections() == 1
        with pytest.raises(pymysql.err.OperationalError):
            await my_query(conn, "SELECT 1")
    finally:
        conn.close()


def test_mariadb_context_manager_removes_everything_even_on_failure():
    with pytest.raises(RuntimeError, match="boom"), ThrowawayMariaDB() as my:
        pid, base_dir = my.pid, my.base_dir
        assert pid is not None and base_dir is not None
        raise RuntimeError("boom")
    assert process_gone(pid)
    assert not os.path.exists(base_dir)


# --- TcpProxy on a local echo server --------------------------------------------------


class Echo:
    """A loopback echo server that counts the connections it saw and how they ended."""

    def __init__(self) -> None:
        self.connections = 0
        self.endings: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            self.endings.append("eof")
        except ConnectionResetError:
            self.endings.append("reset")
        finally:
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    e = Echo()
    e.server = await asyncio.start_server(e.handle, "127.0.0.1", 0)
    e.port = e.server.sockets[0].getsockname()[1]
    yield e
    e.server.close()
    await e.server.wait_closed()


async def read_some(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read(65536)


async def wait_for(cond, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_proxy_forwards_both_ways_and_counts(echo):
    async with TcpProxy("127.0.0.1", echo.port) as proxy:
        assert proxy.host == "127.0.0.1" and proxy.port > 0 and proxy.active == 0
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"hello")
        assert await read_some(reader) == b"hello"
        assert proxy.active == 1 and proxy.accepted == 1
        writer.write_eof()  # a half-close travels through: the echo ends, then so do we
        assert await read_some(reader) == b""
        writer.close()
        await proxy.wait_active(0)
        assert echo.endings == ["eof"]
    assert proxy.errors == []
    with pytest.raises(OSError):  # closed: nothing listens
        await asyncio.open_connection(*proxy.address)


async def test_proxy_partition_holds_bytes_and_new_connections_until_heal(echo):
    async with TcpProxy("127.0.0.1", echo.port) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"a")
        assert await read_some(reader) == b"a"
        proxy.partition()
        assert proxy.partitioned
        writer.write(b"b")
        with pytest.raises(TimeoutError):  # no answer, and no FIN / RST either
            await read_some(reader, timeout=0.3)
        r2, w2 = await asyncio.open_connection(*proxy.address)  # accepted, never forwarded
        w2.write(b"c")
        with pytest.raises(TimeoutError):
            await read_some(r2, timeout=0.2)
        assert proxy.active == 2 and echo.connections == 1
        proxy.heal()
        assert await read_some(reader) == b"b"  # held, not lost
        assert await read_some(r2) == b"c"
        assert echo.connections == 2
        for w in (writer, w2):
            w.close()
        await proxy.wait_active(0)
    assert proxy.errors == []


async def test_proxy_cut_resets_both_sides(echo):
    async with TcpProxy("127.0.0.1", echo.port) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"x")
        assert await read_some(reader) == b"x"
        assert await proxy.cut() == 1
        assert proxy.active == 0
        with pytest.raises(ConnectionResetError):
            await read_some(reader)
        writer.close()
        await wait_for(lambda: echo.endings == ["reset"])
        # still accepting; cut(rst=False) closes politely (FIN)
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"y")
        assert await read_some(reader) == b"y"
        assert await proxy.cut(rst=False) == 1
        assert await read_some(reader) == b""
        writer.close()
        await wait_for(lambda: echo.endings == ["reset", "eof"])


async def test_proxy_cut_also_drops_connections_held_by_a_partition(echo):
    async with TcpProxy("127.0.0.1", echo.port) as proxy:
        proxy.partition()
        reader, writer = await asyncio.open_connection(*proxy.address)
        await proxy.wait_active(1)
        assert await proxy.cut() == 1
        with pytest.raises(ConnectionResetError):
            await read_some(reader)
        writer.close()
        assert echo.connections == 0


async def test_proxy_to_a_dead_target_resets_the_client():
    async with TcpProxy("127.0.0.1", free_port()) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        with pytest.raises(ConnectionResetError):
            await read_some(reader)
        writer.close()
        await proxy.wait_active(0)


def test_proxy_refuses_non_loopback_targets():
    with pytest.raises(ValueError):
        TcpProxy("10.0.0.1", 5432)


# --- TcpProxy in front of the throwaway servers, with the real drivers ----------------


async def test_proxy_partition_hangs_asyncpg_and_heal_recovers(throwaway_pg):
    pg = throwaway_pg
    async with TcpProxy(*pg.address) as proxy:
        conn = await pg_connect(pg, port=proxy.port)
        other = await pg_connect(pg, port=proxy.port)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            proxy.partition()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1):
                    await conn.fetchval("SELECT 1")
            pending = asyncio.create_task(other.fetchval("SELECT 2"))
            await asyncio.sleep(0.2)
            assert not pending.done()
            with pytest.raises(TimeoutError):  # a new connection hangs too
                await asyncpg.connect(**pg.params(port=proxy.port), timeout=0.5)
            proxy.heal()
            async with asyncio.timeout(5):
                assert await pending == 2  # the held query completes after the heal
            fresh = await pg_connect(pg, port=proxy.port)
            try:
                assert await fresh.fetchval("SELECT 1") == 1
            finally:
                await fresh.close()
        finally:
            conn.terminate()
            other.terminate()
    assert proxy.errors == []


async def test_proxy_cut_breaks_asyncpg(throwaway_pg):
    pg = throwaway_pg
    async with TcpProxy(*pg.address) as proxy:
        conn = await pg_connect(pg, port=proxy.port)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert proxy.active == 1
            assert await proxy.cut() == 1
            with pytest.raises(PG_GONE):
                async with asyncio.timeout(2):
                    await conn.fetchval("SELECT 1")
        finally:
            conn.terminate()
        fresh = await pg_connect(pg, port=proxy.port)
        try:
            assert await fresh.fetchval("SELECT 1") == 1
        finally:
            await fresh.close()


async def test_proxy_partition_and_cut_with_aiomysql(throwaway_mariadb):
    my = throwaway_mariadb
    async with TcpProxy(*my.address) as proxy:
        conn = await my_connect(my, port=proxy.port)
        try:
            assert await my_query(conn, "SELECT 1") == [(1,)]
            proxy.partition()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1):
                    await my_query(conn, "SELECT 1")
        finally:
            conn.close()
        proxy.heal()
        conn = await my_connect(my, port=proxy.port)
        try:
            assert await my_query(conn, "SELECT 1") == [(1,)]
            assert await proxy.cut() == 1
            with pytest.raises(pymysql.err.OperationalError):
                async with asyncio.timeout(2):
                    await my_query(conn, "SELECT 1")
        finally:
            conn.close()
    assert proxy.errors == []


async def test_wait_helpers_are_bounded(throwaway_pg):
    async with TcpProxy(*throwaway_pg.address) as proxy:
        with pytest.raises(FaultInfraError):
            await proxy.wait_active(1, timeout=0.1)

"""The workload every system runs: schema, seed data, operation arguments, checks.

Only the standard library is imported at module level; the driver imports live in
the seeding functions, which run in the orchestrating process only.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

TABLE = "bench_item"
N_ROWS = 100_000  # seeded rows, ids 1..N_ROWS; the stream op reads all of them
QUICK_STREAM_ROWS = 20_000  # --quick streams fewer rows to stay under two minutes
LOAD_ROWS = 10_000  # rows materialised by the `await q` memory probe
SELECT_LIMIT = 100
COUNT_SPAN = 1_000  # count(*) over an id range of this size (see README)
POOL_SIZE = 10
CONCURRENCY = 64
STREAM_BATCH = 1_000  # fetch size for systems that expose a knob for it
BASE_TIME = datetime(2024, 1, 1)
VALUE_MULT = 7919  # seeded value = id * VALUE_MULT % 1000

OPS = ("get_by_pk", "select_100", "insert", "update", "transaction", "count", "stream")
MODES = ("latency", "throughput")
MEM_OPS = ("stream", "load_10k")
BACKENDS = ("postgres", "mysql", "sqlite")


@dataclass(frozen=True)
class Budget:
    """Bounds for one measured step: stop at max_ops or max_seconds, whichever first."""

    max_ops: int
    max_seconds: float
    warmup: int


def budget(op: str, mode: str, quick: bool) -> Budget | None:
    """The budget for (op, mode), or None when the step is not run in this profile.

    The stream in throughput mode is POOL_SIZE concurrent streams (ops/s = streams/s);
    --quick leaves it out.
    """
    if op == "stream":
        if mode == "latency":
            return Budget(1, 60.0, 0) if quick else Budget(3, 60.0, 1)
        return None if quick else Budget(POOL_SIZE, 120.0, 0)
    if mode == "latency":
        return Budget(300, 0.08, 5) if quick else Budget(5_000, 1.0, 50)
    # the throughput warm-up runs at full concurrency, so it also fills the pool
    return Budget(3_000, 0.15, 2 * POOL_SIZE) if quick else Budget(60_000, 2.0, 4 * CONCURRENCY)


def steps(quick: bool) -> list[tuple[str, str]]:
    """(mode, op) pairs in run order. The latency stream runs first: its first call in a
    fresh process is also the stream's memory probe (see worker.py)."""
    latency_order = ["stream"] + [op for op in OPS if op != "stream"]
    pairs = [("latency", op) for op in latency_order] + [("throughput", op) for op in OPS]
    return [(m, o) for m, o in pairs if budget(o, m, quick) is not None]


# -- connection settings ---------------------------------------------------------------


def connection_info(backend: str, sqlite_path: str | None = None) -> dict[str, Any]:
    """Plain-data connection settings handed to every worker (env vars override)."""
    if backend == "postgres":
        return {
            "backend": backend,
            "host": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "port": int(os.environ.get("BENCH_PG_PORT", "5432")),
            "user": os.environ.get("BENCH_PG_USER", "postgres"),
            "password": os.environ.get("BENCH_PG_PASSWORD", ""),
            "database": os.environ.get("BENCH_PG_DB", "test"),
        }
    if backend == "mysql":
        return {
            "backend": backend,
            "host": os.environ.get("BENCH_MYSQL_HOST", "127.0.0.1"),
            "port": int(os.environ.get("BENCH_MYSQL_PORT", "3306")),
            "user": os.environ.get("BENCH_MYSQL_USER", "root"),
            "password": os.environ.get("BENCH_MYSQL_PASSWORD", ""),
            "database": os.environ.get("BENCH_MYSQL_DB", "test"),
        }
    if backend == "sqlite":
        if not sqlite_path:
            raise ValueError("sqlite needs a database file path")
        return {"backend": backend, "path": sqlite_path}
    raise ValueError(f"unknown backend {backend!r}")


# -- rows and operation arguments --------------------------------------------------------


def seed_row(i: int) -> tuple[int, str, int, datetime]:
    return (i, f"item-{i}", (i * VALUE_MULT) % 1000, BASE_TIME + timedelta(seconds=i))


def stream_rows(quick: bool) -> int:
    return QUICK_STREAM_ROWS if quick else N_ROWS


def arg_factory(op: str, seed: str, rows: int = N_ROWS) -> Callable[[int], tuple]:
    """A deterministic argument generator: the same (op, seed) gives every system the
    same sequence of calls. `rows` is the stream length."""
    rng = random.Random(f"{op}:{seed}")
    stamp = BASE_TIME + timedelta(days=365)

    def get_by_pk(i: int) -> tuple:
        return (rng.randint(1, N_ROWS),)

    def select_100(i: int) -> tuple:
        return (rng.randrange(0, 500),)

    def insert(i: int) -> tuple:
        return (f"new-{seed}-{i}", rng.randrange(0, 1000), stamp + timedelta(seconds=i))

    def update(i: int) -> tuple:
        # values outside the seeded range (reset() restores them), so MySQL, which
        # counts changed rows, reports 1
        return (rng.randint(1, N_ROWS), rng.randrange(1000, 1_000_000_000))

    def transaction(i: int) -> tuple:
        return insert(i) + update(i)

    def count(i: int) -> tuple:
        lo = rng.randint(1, N_ROWS - COUNT_SPAN + 1)
        return (lo, lo + COUNT_SPAN - 1)

    def stream(i: int) -> tuple:
        return (rows,)

    def load_10k(i: int) -> tuple:
        return (LOAD_ROWS,)

    factories = {
        "get_by_pk": get_by_pk,
        "select_100": select_100,
        "insert": insert,
        "update": update,
        "transaction": transaction,
        "count": count,
        "stream": stream,
        "load_10k": load_10k,
    }
    return factories[op]


def field(obj: Any, name: str) -> Any:
    """Read a column from a model, a mapping-like record or a plain tuple row."""
    try:
        return getattr(obj, name)
    except AttributeError:
        pass
    try:
        return obj[name]
    except (TypeError, KeyError, IndexError):
        return obj[("id", "name", "value", "created").index(name)]


def check(op: str, args: tuple, result: Any) -> str | None:
    """None when `result` is right for `op(*args)`, else a description of the problem."""
    try:
        if op == "get_by_pk":
            ok = field(result, "id") == args[0]
        elif op == "select_100":
            rows = list(result)
            ids = [field(r, "id") for r in rows]
            ok = (
                len(rows) == SELECT_LIMIT
                and all(field(r, "value") > args[0] for r in rows)
                and ids == sorted(ids)
            )
        elif op == "insert":
            ok = isinstance(result, int) and result > N_ROWS
        elif op == "update":
            ok = result == 1
        elif op == "transaction":
            ok = field(result, "id") == args[3] and field(result, "value") == args[4]
        elif op == "count":
            ok = result == args[1] - args[0] + 1
        elif op == "stream":
            ok = result == args[0]
        elif op == "load_10k":
            rows = list(result)
            ok = len(rows) == args[0] and field(rows[-1], "name").startswith("item-")
        else:
            return f"unknown op {op}"
    except Exception as exc:  # a wrong shape is a failed check, not a crash
        return f"{type(exc).__name__}: {exc}"
    return None if ok else f"unexpected result {summarize(result)}"


def summarize(result: Any) -> str:
    text = repr(result)
    return text if len(text) < 200 else text[:200] + "..."


# -- schema, seeding and reset (orchestrator only) ---------------------------------------

DDL = {
    "postgres": (
        f"CREATE TABLE {TABLE} (id SERIAL PRIMARY KEY, name VARCHAR(255) NOT NULL, "
        "value INTEGER NOT NULL, created TIMESTAMP NOT NULL)"
    ),
    "mysql": (
        f"CREATE TABLE {TABLE} (id INTEGER AUTO_INCREMENT PRIMARY KEY, "
        "name VARCHAR(255) NOT NULL, value INTEGER NOT NULL, created DATETIME NOT NULL) "
        "ENGINE=InnoDB"
    ),
    "sqlite": (
        f"CREATE TABLE {TABLE} (id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL, "
        "value INTEGER NOT NULL, created DATETIME NOT NULL)"
    ),
}


async def prepare(info: dict[str, Any]) -> str:
    """Drop, create and seed the table with N_ROWS rows; return the server version."""
    backend = info["backend"]
    rows = [seed_row(i) for i in range(1, N_ROWS + 1)]
    if backend == "postgres":
        conn = await _pg_connect(info)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await conn.execute(DDL[backend])
            await conn.copy_records_to_table(TABLE, records=rows)
            await conn.execute(f"SELECT setval('{TABLE}_id_seq', {N_ROWS})")
            await conn.execute(f"VACUUM ANALYZE {TABLE}")
            return "PostgreSQL " + await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    elif backend == "mysql":
        conn = await _mysql_connect(info)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SET sql_notes = 0")  # no warning for DROP IF EXISTS
                await cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
                await cur.execute(DDL[backend])
                sql = f"INSERT INTO {TABLE} (id, name, value, created) VALUES (%s, %s, %s, %s)"
                for start in range(0, N_ROWS, 5_000):
                    await cur.executemany(sql, rows[start : start + 5_000])
                await cur.execute(f"ANALYZE TABLE {TABLE}")
                await cur.fetchall()
                await cur.execute("SELECT VERSION()")
                return "MySQL/MariaDB " + (await cur.fetchone())[0]
        finally:
            conn.close()
    else:
        with _sqlite_connect(info) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            conn.execute(DDL[backend])
            conn.executemany(
                f"INSERT INTO {TABLE} (id, name, value, created) VALUES (?, ?, ?, ?)",
                [(i, n, v, c.isoformat(" ", "microseconds")) for i, n, v, c in rows],
            )
            conn.commit()
            conn.execute(f"ANALYZE {TABLE}")
        conn.close()
        return f"SQLite {sqlite3.sqlite_version} (WAL, file in a temp dir)"


async def reset(info: dict[str, Any]) -> None:
    """Undo the write operations (delete added rows, restore updated values), so every
    system starts from the same N_ROWS rows."""
    backend = info["backend"]
    sqls = [
        f"DELETE FROM {TABLE} WHERE id > {N_ROWS}",
        f"UPDATE {TABLE} SET value = (id * {VALUE_MULT}) % 1000 WHERE value >= 1000",
    ]
    if backend == "postgres":
        conn = await _pg_connect(info)
        try:
            for sql in sqls:
                await conn.execute(sql)
            await conn.execute(f"VACUUM {TABLE}")
        finally:
            await conn.close()
    elif backend == "mysql":
        conn = await _mysql_connect(info)
        try:
            async with conn.cursor() as cur:
                for sql in sqls:
                    await cur.execute(sql)
        finally:
            conn.close()
    else:
        with _sqlite_connect(info) as conn:
            for sql in sqls:
                conn.execute(sql)
            conn.commit()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()


async def count_added(info: dict[str, Any]) -> int:
    """Rows with id > N_ROWS: what the insert and transaction operations committed."""
    backend = info["backend"]
    sql = f"SELECT count(*) FROM {TABLE} WHERE id > {N_ROWS}"
    if backend == "postgres":
        conn = await _pg_connect(info)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()
    if backend == "mysql":
        conn = await _mysql_connect(info)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
                return (await cur.fetchone())[0]
        finally:
            conn.close()
    with _sqlite_connect(info) as conn:
        count = conn.execute(sql).fetchone()[0]
    conn.close()
    return count


async def drop(info: dict[str, Any]) -> None:
    backend = info["backend"]
    if backend == "postgres":
        conn = await _pg_connect(info)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        finally:
            await conn.close()
    elif backend == "mysql":
        conn = await _mysql_connect(info)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SET sql_notes = 0")
                await cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        finally:
            conn.close()


async def _pg_connect(info: dict[str, Any]) -> Any:
    import asyncpg

    return await asyncpg.connect(
        host=info["host"],
        port=info["port"],
        user=info["user"],
        password=info["password"] or None,
        database=info["database"],
        timeout=10,
    )


async def _mysql_connect(info: dict[str, Any]) -> Any:
    import aiomysql

    return await aiomysql.connect(
        host=info["host"],
        port=info["port"],
        user=info["user"],
        password=info["password"],
        db=info["database"],
        autocommit=True,
        connect_timeout=10,
    )


def _sqlite_connect(info: dict[str, Any]) -> sqlite3.Connection:
    return sqlite3.connect(info["path"], timeout=30)

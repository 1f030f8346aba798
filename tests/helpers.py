"""Small helpers shared by the test modules: bounded polling and server-side connection ids."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiomysql
import asyncpg
from conftest import MY, PG


async def wait_until(predicate: Callable[[], Any], what: str, tries: int = 1000,
                     delay: float = 0.01) -> None:
    """Poll ``predicate`` a bounded number of times."""
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(delay)
    raise AssertionError(f"gave up waiting for {what}")


async def server_conn_id(db: Any, backend: str) -> Any:
    """The server-side id of the connection a statement runs on (the pinned one in a
    block): PostgreSQL backend pid, MySQL connection id."""
    sql = "SELECT pg_backend_pid()" if backend == "postgres" else "SELECT CONNECTION_ID()"
    return (await db.aexecute_sql(sql)).fetchone()[0]


async def live_server_ids(backend: str, ids: set[Any]) -> set[Any]:
    """Which of these PG backend pids / MySQL connection ids are still connected, asked
    through a connection of the test's own."""
    if backend == "postgres":
        pg = await asyncpg.connect(**PG)
        try:
            rows = await pg.fetch("SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                                  [int(i) for i in ids])
            return {r["pid"] for r in rows}
        finally:
            await pg.close()
    my = await aiomysql.connect(host=MY["host"], port=MY["port"], user=MY["user"],
                                password=MY["password"], db=MY["database"], autocommit=True)
    try:
        async with my.cursor() as cur:
            await cur.execute("SELECT ID FROM information_schema.PROCESSLIST")
            return {int(r[0]) for r in await cur.fetchall()} & {int(i) for i in ids}
    finally:
        my.close()


async def wait_gone(backend: str, ids: set[Any]) -> None:
    """Poll (bounded) until none of ``ids`` is connected to the server any more."""
    alive: set[Any] = set(ids)
    for _ in range(200):
        alive = await live_server_ids(backend, ids)
        if not alive:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"server connections {sorted(alive)} are still open")

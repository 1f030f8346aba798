"""Fixtures: one suite, parametrized over real SQLite files, PostgreSQL and MariaDB/MySQL.

Servers come from the environment (defaults: this machine's loopback servers). An
unreachable server fails the run; it is never skipped. ``APEEWEE_BACKENDS=sqlite,postgres``
narrows the run to some backends while developing.
"""

from __future__ import annotations

import os
import sqlite3
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomysql
import asyncpg
import peewee
import pytest

import apeewee

PG = {
    "database": os.environ.get("APEEWEE_PG_DB", "test"),
    "host": os.environ.get("APEEWEE_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("APEEWEE_PG_PORT", "5432")),
    "user": os.environ.get("APEEWEE_PG_USER", "postgres"),
}
MY = {
    "database": os.environ.get("APEEWEE_MY_DB", "test"),
    "host": os.environ.get("APEEWEE_MY_HOST", "127.0.0.1"),
    "port": int(os.environ.get("APEEWEE_MY_PORT", "3306")),
    "user": os.environ.get("APEEWEE_MY_USER", "root"),
    "password": os.environ.get("APEEWEE_MY_PASSWORD", ""),
}
ALL_BACKENDS = ("sqlite", "postgres", "mysql")
BACKENDS = tuple(
    b for b in os.environ.get("APEEWEE_BACKENDS", ",".join(ALL_BACKENDS)).split(",") if b
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail fast, and loudly, when a selected server is down."""
    import asyncio

    async def check() -> None:
        if "postgres" in BACKENDS:
            conn = await asyncpg.connect(timeout=5, **PG)
            await conn.close()
        if "mysql" in BACKENDS:
            conn = await aiomysql.connect(
                host=MY["host"], port=MY["port"], user=MY["user"], password=MY["password"],
                db=MY["database"], connect_timeout=5)
            conn.close()

    try:
        asyncio.run(check())
    except Exception as exc:
        pytest.exit(f"a test database server is unreachable ({exc!r}); start it "
                    "(see README, 'Running the tests') - servers are never skipped",
                    returncode=1)


def make_db(backend: str, tmp_path: Any, name: str = "test.db", **options: Any) -> Any:
    """A fresh apeewee database for ``backend`` with pool ``options``."""
    if backend == "sqlite":
        options.setdefault("pragmas", {"journal_mode": "wal"})
        return apeewee.SqliteDatabase(str(tmp_path / name), **options)
    if backend == "postgres":
        return apeewee.PostgresqlDatabase(**{**PG, **options})
    if backend == "mysql":
        return apeewee.MySQLDatabase(**{**MY, **options})
    raise ValueError(backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db_factory(backend: str, tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    """Make databases for this backend; each one's pool is closed after the test."""
    made: list[Any] = []

    def factory(**options: Any) -> Any:
        database = make_db(backend, tmp_path, **options)
        made.append(database)
        return database

    yield factory
    for database in made:
        await database.close_pool(timeout=5)


@pytest.fixture
async def db(db_factory: Callable[..., Any]) -> Any:
    return db_factory(max_connections=5, timeout=10)


def define_models(database: Any) -> types.SimpleNamespace:
    """The suite's schema, bound to ``database``."""

    class User(apeewee.Model):
        name = peewee.CharField(max_length=64, unique=True)
        age = peewee.IntegerField(default=0)

        class Meta:
            table_name = "ap_user"

    class Tweet(apeewee.Model):
        user = peewee.ForeignKeyField(User, backref="tweets", on_delete="CASCADE")
        body = peewee.CharField(max_length=200)
        likes = peewee.IntegerField(default=0)

        class Meta:
            table_name = "ap_tweet"

    class Counter(apeewee.Model):
        key = peewee.CharField(max_length=32, primary_key=True)
        value = peewee.IntegerField(default=0)

        class Meta:
            table_name = "ap_counter"

    for model in (User, Tweet, Counter):
        model._meta.set_database(database)
    return types.SimpleNamespace(User=User, Tweet=Tweet, Counter=Counter,
                                 all=[User, Tweet, Counter])


@pytest.fixture
async def models(db: Any) -> AsyncIterator[types.SimpleNamespace]:
    """User, Tweet and Counter tables, created empty for the test and dropped after."""
    ns = define_models(db)
    await db.adrop_tables(ns.all)
    await db.acreate_tables(ns.all)
    yield ns
    await db.adrop_tables(ns.all)


async def outside_count(backend: str, db: Any, table: str, where: str = "") -> int:
    """Count rows through a connection of the test's own, outside apeewee's pool:
    proves a write is committed and visible to others."""
    sql = f"SELECT COUNT(*) FROM {table} {where}"
    if backend == "sqlite":
        conn = sqlite3.connect(db.database)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    if backend == "postgres":
        pg = await asyncpg.connect(**PG)
        try:
            return int(await pg.fetchval(sql))
        finally:
            await pg.close()
    my = await aiomysql.connect(host=MY["host"], port=MY["port"], user=MY["user"],
                                password=MY["password"], db=MY["database"], autocommit=True)
    try:
        async with my.cursor() as cur:
            await cur.execute(sql)
            return int((await cur.fetchone())[0])
    finally:
        my.close()

"""Driver errors become peewee's exceptions, chained to the driver's, and leave the pool clean."""

from __future__ import annotations

import sqlite3

import asyncpg
import peewee
import pymysql
import pytest
from conftest import outside_count

DRIVER_ERROR = {
    "sqlite": sqlite3.Error,
    "postgres": asyncpg.PostgresError,
    "mysql": pymysql.err.MySQLError,
}

# What each backend raises for a syntax error and for a missing table (as psycopg2,
# pymysql and sqlite3 classify them, and so peewee's sync databases).
BAD_SQL_ERROR = {
    "sqlite": peewee.OperationalError,
    "postgres": peewee.ProgrammingError,
    "mysql": peewee.ProgrammingError,
}


@pytest.fixture
async def models(models, db, backend):
    # peewee names ap_user's unique index "user_name" (from the model's name); on
    # PostgreSQL index names are schema-wide, so a stray "user" table in the test
    # database silently suppresses it (CREATE UNIQUE INDEX IF NOT EXISTS). Make sure
    # ap_user.name is unique, as the schema says, whatever else lives in the database.
    if backend == "postgres":
        await db.aexecute_sql(
            'CREATE UNIQUE INDEX IF NOT EXISTS "ape_user_name_uniq" ON "ap_user" ("name")')
    return models


def assert_clean_pool(db):
    stats = db.pool_stats()
    assert stats.in_use == 0
    assert stats.waiting == 0


# -- classification ----------------------------------------------------------------------------


async def test_unique_violation_raises_integrity_error(backend, db, models):
    User = models.User
    await User.acreate(name="alice")
    with pytest.raises(peewee.IntegrityError) as info:
        await User.acreate(name="alice")
    assert isinstance(info.value.__cause__, DRIVER_ERROR[backend])
    assert_clean_pool(db)
    assert await outside_count(backend, db, "ap_user") == 1


async def test_not_null_violation_raises_integrity_error(backend, db, models):
    Tweet = models.Tweet
    with pytest.raises(peewee.IntegrityError) as info:
        await Tweet.ainsert(user=None, body="orphan")
    assert isinstance(info.value.__cause__, DRIVER_ERROR[backend])
    with pytest.raises(peewee.IntegrityError):
        await models.User.ainsert(name=None)
    assert_clean_pool(db)
    assert await Tweet.aselect().acount() == 0


async def test_except_peewee_integrity_error_catches_it(db, models):
    User = models.User
    await User.acreate(name="alice")
    caught = None
    try:
        await User.ainsert(name="alice", age=1)
    except peewee.IntegrityError as exc:
        caught = exc
    assert caught is not None
    assert isinstance(caught, peewee.DatabaseError)
    assert "alice" in str(caught) or "name" in str(caught) or "unique" in str(caught).lower()


async def test_bad_sql_raises_backend_error_class(backend, db, models):
    expected = BAD_SQL_ERROR[backend]
    with pytest.raises(peewee.DatabaseError) as info:
        await db.aexecute_sql("SELEC 1")
    assert type(info.value) is expected
    assert isinstance(info.value.__cause__, DRIVER_ERROR[backend])
    assert_clean_pool(db)


async def test_missing_table_raises_backend_error_class(backend, db, models):
    import apeewee

    class Ghost(apeewee.Model):
        name = peewee.CharField()

        class Meta:
            database = db
            table_name = "ape_no_such_table"

    expected = BAD_SQL_ERROR[backend]
    with pytest.raises(peewee.DatabaseError) as info:
        await Ghost.aselect()
    assert type(info.value) is expected
    assert isinstance(info.value.__cause__, DRIVER_ERROR[backend])
    with pytest.raises(expected):
        await Ghost.ainsert(name="x")
    with pytest.raises(expected):
        await db.aexecute_sql("SELECT * FROM ape_no_such_table")
    assert_clean_pool(db)
    assert await models.User.aselect().acount() == 0  # the pool still serves queries


async def test_data_error_where_the_backend_raises_it(backend, db, models):
    User = models.User
    if backend == "postgres":
        with pytest.raises(peewee.DataError) as info:
            await db.aexecute_sql("SELECT 'abc'::int")
        assert isinstance(info.value.__cause__, asyncpg.PostgresError)
        with pytest.raises(peewee.DataError):
            await User.acreate(name="x" * 65)  # VARCHAR(64)
    elif backend == "mysql":
        with pytest.raises(peewee.DataError) as info:
            await User.acreate(name="x" * 65)  # strict mode: too long is an error
        assert isinstance(info.value.__cause__, pymysql.err.DataError)
    else:
        # SQLite checks no VARCHAR length and never raises DataError: the value is kept.
        user = await User.acreate(name="x" * 65)
        assert len((await User.aget_by_id(user.id)).name) == 65
    assert_clean_pool(db)
    assert await User.aselect().where(User.name == "ok").acount() == 0


async def test_driver_exception_is_chained_with_its_details(backend, db, models):
    User = models.User
    await User.acreate(name="alice")
    with pytest.raises(peewee.IntegrityError) as info:
        await User.ainsert(name="alice")
    cause = info.value.__cause__
    assert isinstance(cause, DRIVER_ERROR[backend])
    if backend == "postgres":
        assert cause.sqlstate == "23505"
    elif backend == "mysql":
        assert cause.args[0] == 1062
    else:
        assert isinstance(cause, sqlite3.IntegrityError)


# -- the pool after errors ----------------------------------------------------------------------


async def test_failed_statement_leaves_no_connection_checked_out(backend, db, models):
    User = models.User
    await User.acreate(name="alice")
    for _ in range(10):  # more than max_connections: a leak would exhaust the pool
        with pytest.raises(peewee.IntegrityError):
            await User.acreate(name="alice")
        with pytest.raises(peewee.DatabaseError):
            await db.aexecute_sql("SELEC 1")
    assert_clean_pool(db)
    stats = db.pool_stats()
    assert stats.open <= 5
    await User.acreate(name="bob")
    assert await outside_count(backend, db, "ap_user") == 2


async def test_connection_stays_usable_after_an_error_in_a_connection_block(backend, db, models):
    User = models.User
    async with db.connection():
        await User.acreate(name="alice")
        with pytest.raises(peewee.IntegrityError):
            await User.acreate(name="alice")
        assert not db.in_transaction()
        await User.acreate(name="bob")  # autocommit: not stuck in an aborted transaction
        assert await User.aselect().acount() == 2
    assert_clean_pool(db)
    assert await outside_count(backend, db, "ap_user") == 2


async def test_failed_statement_in_atomic_rolls_back_the_transaction(backend, db, models):
    User = models.User
    await User.acreate(name="alice")
    with pytest.raises(peewee.IntegrityError):
        async with db.atomic():
            await User.acreate(name="bob")
            await User.acreate(name="alice")
    assert not db.in_transaction()
    assert_clean_pool(db)
    assert [u.name for u in await User.aselect()] == ["alice"]
    assert await outside_count(backend, db, "ap_user") == 1
    # The connection is reusable: a new transaction on it commits.
    async with db.atomic():
        await User.acreate(name="carol")
    assert await outside_count(backend, db, "ap_user") == 2
    assert_clean_pool(db)


async def test_bad_sql_in_atomic_rolls_back_and_connection_is_reused(backend, db, models):
    User = models.User
    opened = db.pool_stats().opened_total
    with pytest.raises(peewee.DatabaseError):
        async with db.atomic():
            await User.acreate(name="bob")
            await db.aexecute_sql("SELEC 1")
    assert await User.aselect().acount() == 0
    assert await outside_count(backend, db, "ap_user") == 0
    stats = db.pool_stats()
    assert stats.in_use == 0
    assert stats.opened_total == opened  # rolled back and kept, not discarded
    assert sum(stats.discarded_total.values()) == 0


async def test_savepoint_recovers_from_an_error_inside_a_transaction(backend, db, models):
    User = models.User
    await User.acreate(name="alice")
    async with db.atomic():
        await User.acreate(name="bob")
        try:
            async with db.atomic():  # savepoint
                await User.acreate(name="alice")
        except peewee.IntegrityError:
            pass
        # PostgreSQL would refuse this if the failed insert had aborted the transaction.
        await User.acreate(name="carol")
    assert sorted(u.name for u in await User.aselect()) == ["alice", "bob", "carol"]
    assert await outside_count(backend, db, "ap_user") == 3
    assert_clean_pool(db)


async def test_error_caught_inside_transaction_without_savepoint(backend, db, models):
    User = models.User
    await User.acreate(name="alice")
    async with db.atomic():
        await User.acreate(name="bob")
        with pytest.raises(peewee.IntegrityError):
            await User.acreate(name="alice")
        if backend == "postgres":
            # The transaction is aborted: PostgreSQL refuses further statements.
            with pytest.raises(peewee.InternalError):
                await User.aselect().acount()
        else:
            assert await User.aselect().acount() == 2
    if backend == "postgres":
        assert await outside_count(backend, db, "ap_user") == 1  # COMMIT of an aborted txn
    else:
        assert await outside_count(backend, db, "ap_user") == 2
    assert_clean_pool(db)
    assert await User.aselect().acount() == await outside_count(backend, db, "ap_user")


async def test_server_notes_are_not_raised_as_python_warnings(db, models):
    # MySQL answers these with a note/warning (SHOW WARNINGS); peewee's sync databases
    # ignore them, so a statement that succeeds must simply succeed (pytest runs with
    # warnings as errors, which turns any leaked warnings.warn into an exception).
    await db.aexecute_sql("DROP TABLE IF EXISTS ape_never_created")
    await models.User.acreate(name="alice")
    await models.User.ainsert(name="alice").on_conflict_ignore()
    assert await models.User.aselect().acount() == 1
    assert_clean_pool(db)

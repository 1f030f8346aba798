"""Awaitable model queries, aexecute() on every kind of peewee query, and durable writes."""

from __future__ import annotations

import gc
import logging
import types
import warnings

import peewee
import pytest
from conftest import define_models, outside_count
from peewee import JOIN, fn

import apeewee


@pytest.fixture
async def models(models, db, backend):
    # peewee names ap_user's unique index "user_name" (from the model's name); on
    # PostgreSQL index names are schema-wide, so a stray "user" table in the test
    # database silently suppresses it (CREATE UNIQUE INDEX IF NOT EXISTS). Make sure
    # ap_user.name is unique, as the schema says, whatever else lives in the database.
    if backend == "postgres":
        await db.aexecute_sql(
            'CREATE UNIQUE INDEX IF NOT EXISTS "apq_user_name_uniq" ON "ap_user" ("name")')
    return models


@pytest.fixture
async def data(models):
    User, Tweet = models.User, models.Tweet
    alice = await User.acreate(name="alice", age=30)
    bob = await User.acreate(name="bob", age=12)
    carol = await User.acreate(name="carol", age=30)
    for user, bodies in ((alice, ["a1", "a2", "a3"]), (bob, ["b1"])):
        for i, body in enumerate(bodies):
            await Tweet.acreate(user=user, body=body, likes=i)
    return types.SimpleNamespace(User=User, Tweet=Tweet, alice=alice, bob=bob, carol=carol)


def unawaited_warnings(record):
    return [w for w in record
            if issubclass(w.category, RuntimeWarning) and "never awaited" in str(w.message)]


# -- Model.aselect(): awaitable ModelSelect ---------------------------------------------------


async def test_awaited_select_gives_list_of_model_instances(data):
    User = data.User
    rows = await User.aselect().order_by(User.name)
    assert isinstance(rows, list)
    assert all(isinstance(r, User) for r in rows)
    assert [(r.id, r.name, r.age) for r in rows] == [
        (data.alice.id, "alice", 30), (data.bob.id, "bob", 12), (data.carol.id, "carol", 30)]


async def test_aselect_is_a_model_select_with_its_methods(data):
    q = data.User.aselect()
    assert isinstance(q, apeewee.AsyncModelSelect)
    assert isinstance(q, peewee.ModelSelect)
    assert len(await q) == 3


async def test_select_fields_where_order_limit_offset(data):
    User = data.User
    rows = await (User.aselect(User.name).where(User.age >= 18)
                  .order_by(User.name.desc()).limit(1).offset(1))
    assert [r.name for r in rows] == ["alice"]
    assert rows[0].age is None  # not selected


async def test_paginate(data):
    User = data.User
    q = User.aselect().order_by(User.name)
    assert [u.name for u in await q.paginate(1, 2)] == ["alice", "bob"]
    assert [u.name for u in await q.paginate(2, 2)] == ["carol"]
    assert await q.paginate(3, 2) == []


async def test_distinct(data):
    User = data.User
    rows = await User.aselect(User.age).distinct().order_by(User.age).tuples()
    assert rows == [(12,), (30,)]


async def test_group_by_having(data):
    User, Tweet = data.User, data.Tweet
    n = fn.COUNT(Tweet.id)
    rows = await (User.aselect(User.name, n.alias("n"))
                  .join(Tweet, JOIN.LEFT_OUTER)
                  .group_by(User.name)
                  .having(n >= 1)
                  .order_by(User.name)
                  .tuples())
    assert rows == [("alice", 3), ("bob", 1)]


async def test_join_populates_related_instance_without_a_query(data):
    User, Tweet = data.User, data.Tweet
    rows = await Tweet.aselect(Tweet, User).join(User).order_by(Tweet.body)
    assert [r.body for r in rows] == ["a1", "a2", "a3", "b1"]
    # A lazy foreign-key load would raise SyncQueryError: these come from the join.
    assert [r.user.name for r in rows] == ["alice", "alice", "alice", "bob"]
    assert rows[3].user.age == 12 and rows[3].user.id == data.bob.id


async def test_join_switch_and_left_outer_join(data):
    User, Tweet = data.User, data.Tweet
    rows = await (Tweet.aselect(Tweet.body, User.name)
                  .join(User)
                  .switch(Tweet)
                  .where(Tweet.likes >= 1)
                  .order_by(Tweet.body))
    assert [(r.body, r.user.name) for r in rows] == [("a2", "alice"), ("a3", "alice")]

    users = await (User.aselect(User.name, fn.COUNT(Tweet.id).alias("n"))
                   .join(Tweet, JOIN.LEFT_OUTER)
                   .group_by(User.name)
                   .order_by(User.name))
    assert [(u.name, u.n) for u in users] == [("alice", 3), ("bob", 1), ("carol", 0)]


async def test_dicts_tuples_namedtuples_objects(data):
    User, Tweet = data.User, data.Tweet
    q = User.aselect(User.name, User.age).where(User.name == "bob")
    assert await q.dicts() == [{"name": "bob", "age": 12}]
    assert await q.tuples() == [("bob", 12)]
    (nt,) = await q.namedtuples()
    assert (nt.name, nt.age) == ("bob", 12)
    (obj,) = await (Tweet.aselect(Tweet.body, User.name).join(User)
                    .where(User.name == "bob").objects())
    assert isinstance(obj, Tweet)
    assert (obj.body, obj.name) == ("b1", "bob")  # objects(): joined columns flattened


async def test_union_and_union_all(data):
    User = data.User
    older = User.aselect(User.name).where(User.age > 20)
    named_a = User.aselect(User.name).where(User.name == "alice")
    union = older | named_a
    assert isinstance(union, apeewee.AsyncModelCompoundSelectQuery)
    assert await union.order_by(User.name).tuples() == [("alice",), ("carol",)]
    both = await older.union_all(named_a).order_by(User.name).tuples()
    assert both == [("alice",), ("alice",), ("carol",)]


async def test_aget_afirst_ascalar(data):
    User = data.User
    q = User.aselect().where(User.age == 30).order_by(User.name)
    got = await q.aget()
    assert isinstance(got, User) and got.name == "alice"
    assert (await q.afirst()).name == "alice"
    assert [u.name for u in await q.afirst(2)] == ["alice", "carol"]
    assert await User.aselect().where(User.age > 99).afirst() is None
    assert await User.aselect(fn.MAX(User.age)).ascalar() == 30
    assert await User.aselect(User.name, User.age).where(User.name == "bob").ascalar(
        as_tuple=True) == ("bob", 12)
    assert await User.aselect(User.id).where(User.age > 99).ascalar() is None


async def test_aget_without_a_match_raises_does_not_exist(data):
    User = data.User
    with pytest.raises(User.DoesNotExist, match="nobody"):
        await User.aselect().where(User.name == "nobody").aget()


async def test_acount_and_aexists(data):
    User, Tweet = data.User, data.Tweet
    assert await User.aselect().acount() == 3
    assert await User.aselect().where(User.age == 30).acount() == 2
    assert await Tweet.aselect().join(User).where(User.name == "alice").acount() == 3
    assert await User.aselect(User.age).distinct().acount() == 2
    assert await User.aselect().order_by(User.id).limit(2).acount() == 2
    assert await User.aselect().where(User.name == "bob").aexists() is True
    assert await User.aselect().where(User.name == "nobody").aexists() is False


async def test_async_for_iterates_rows(data):
    User = data.User
    names = [u.name async for u in User.aselect().where(User.age == 30).order_by(User.name)]
    assert names == ["alice", "carol"]
    seen = [row async for row in User.aselect(User.name).where(User.age > 99)]
    assert seen == []


async def test_for_update_inside_transaction(backend, db, data):
    User = data.User
    q = User.aselect().where(User.name == "bob").for_update()
    if backend == "sqlite":
        # peewee refuses FOR UPDATE on SQLite (database.for_update is False).
        async with db.atomic():
            with pytest.raises(ValueError, match="FOR UPDATE"):
                await q
        assert db.pool_stats().in_use == 0
        return
    assert "FOR UPDATE" in q.sql()[0]
    async with db.atomic():
        (bob,) = await q
        bob.age = 13
        await bob.asave()
    assert (await User.aget_by_id(data.bob.id)).age == 13


# -- Model.ainsert / ainsert_many / aupdate / adelete --------------------------------------


async def test_ainsert_gives_the_new_primary_key(data):
    User = data.User
    pk = await User.ainsert(name="dave", age=40)
    assert isinstance(pk, int)
    assert pk > data.carol.id
    assert (await User.aget_by_id(pk)).name == "dave"
    pk2 = await User.ainsert({User.name: "erin"})
    assert pk2 == pk + 1


async def test_ainsert_many_inserts_every_row(backend, data):
    User = data.User
    rows = [{"name": f"u{i}", "age": i} for i in range(5)]
    result = await User.ainsert_many(rows)
    users = await User.aselect().where(User.name.startswith("u")).order_by(User.age)
    assert [(u.name, u.age) for u in users] == [(r["name"], r["age"]) for r in rows]
    if backend == "postgres":  # RETURNING the primary keys
        assert [r[0] for r in result] == [u.id for u in users]
    await User.ainsert_many([("t1", 1), ("t2", 2)], fields=[User.name, User.age])
    assert await User.aselect().where(User.name.in_(["t1", "t2"])).acount() == 2


async def test_aupdate_and_adelete_give_affected_row_counts(data):
    User, Tweet = data.User, data.Tweet
    assert await User.aupdate(age=User.age + 1).where(User.age == 30) == 2
    assert await User.aupdate({User.age: 0}).where(User.name == "nobody") == 0
    assert sorted(u.age for u in await User.aselect()) == [12, 31, 31]
    assert await Tweet.adelete().where(Tweet.likes >= 1) == 2
    assert await Tweet.adelete().where(Tweet.likes >= 1) == 0
    assert await Tweet.aselect().acount() == 2


async def test_returning_gives_rows_where_supported(backend, data):
    User, Tweet = data.User, data.Tweet
    # RETURNING: PostgreSQL and SQLite >= 3.35 for all writes; MariaDB for INSERT/DELETE.
    rows = await User.ainsert(name="dave", age=5).returning(User.id, User.name)
    assert len(rows) == 1 and isinstance(rows[0], User)
    assert rows[0].name == "dave" and rows[0].id == (await User.aget(name="dave")).id

    rows = await Tweet.adelete().where(Tweet.likes >= 1).returning(Tweet.body)
    assert sorted(r.body for r in rows) == ["a2", "a3"]

    upd = User.aupdate(age=User.age + 1).where(User.age == 30).returning(User.name, User.age)
    if backend == "mysql":
        str(upd)  # compiled, not run: MariaDB has no UPDATE ... RETURNING
        return
    rows = await upd.dicts()
    assert sorted((r["name"], r["age"]) for r in rows) == [("alice", 31), ("carol", 31)]


async def test_on_conflict_ignore_keeps_the_existing_row(backend, db, data):
    User = data.User
    await User.ainsert(name="alice", age=99).on_conflict_ignore()
    assert await User.aselect().acount() == 3
    assert (await User.aget(name="alice")).age == 30
    await User.ainsert(name="zed", age=1).on_conflict_ignore()
    assert (await User.aget(name="zed")).age == 1
    assert await outside_count(backend, db, "ap_user") == 4


async def test_on_conflict_update_preserve_and_update(backend, data):
    User = data.User
    target = {} if backend == "mysql" else {"conflict_target": [User.name]}
    await User.ainsert(name="alice", age=77).on_conflict(preserve=[User.age], **target)
    assert (await User.aget(name="alice")).age == 77
    await User.ainsert(name="bob", age=0).on_conflict(
        update={User.age: User.age + 100}, **target)
    assert (await User.aget(name="bob")).age == 112
    await User.ainsert(name="new", age=5).on_conflict(preserve=[User.age], **target)
    assert (await User.aget(name="new")).age == 5
    assert await User.aselect().acount() == 4


# -- un-awaited queries warn ------------------------------------------------------------------


UNAWAITED = {
    # Built in one call, never chained: the commonest "forgot the await".
    "select": (lambda U: U.aselect(), "SELECT"),
    "insert": (lambda U: U.ainsert(name="x"), "INSERT"),
    "insert_many": (lambda U: U.ainsert_many([{"name": "x"}, {"name": "y"}]), "INSERT"),
    "update": (lambda U: U.aupdate(age=1), "UPDATE"),
    "delete": (lambda U: U.adelete(), "DELETE"),
    "raw": (lambda U: U.araw("SELECT * FROM ap_user"), "SELECT"),
    # Built by chaining (each step clones).
    "select_chained": (lambda U: U.aselect().where(U.name == "x").order_by(U.id), "SELECT"),
    "update_chained": (lambda U: U.aupdate(age=1).where(U.id == 1), "UPDATE"),
    "delete_chained": (lambda U: U.adelete().where(U.id == 1), "DELETE"),
}


@pytest.mark.parametrize("kind", list(UNAWAITED))
async def test_unawaited_query_warns_naming_its_sql(db, kind):
    User = define_models(db).User  # no tables: building and dropping a query needs none
    make, verb = UNAWAITED[kind]
    q = make(User)
    with pytest.warns(RuntimeWarning, match=rf"never awaited: {verb} .*ap_user"):
        del q
        gc.collect()
    assert db.pool_stats().acquired_total == 0  # it never ran


async def test_unawaited_query_never_runs(data):
    User = data.User
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        User.ainsert(name="x")
        User.adelete()
        User.aupdate(age=0).where(User.age > 0)
        gc.collect()
    assert await User.aselect().acount() == 3
    assert await User.aselect().where(User.age == 0).acount() == 0


async def test_awaited_chained_builder_does_not_warn(data):
    User = data.User
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        rows = await User.aselect().where(User.age > 18).order_by(User.name).limit(5)
        n = await User.aupdate(age=1).where(User.name == "bob").where(User.age == 12)
        q = User.aselect().where(User.age > 0)
        count = await q.acount()
        del q
        gc.collect()
    assert [u.name for u in rows] == ["alice", "carol"] and n == 1 and count == 3
    assert unawaited_warnings(record) == []


async def test_subquery_does_not_warn(data):
    User, Tweet = data.User, data.Tweet
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sub = User.aselect(User.id).where(User.age < 20)
        rows = await Tweet.aselect().where(Tweet.user.in_(sub))
        del sub
        n = await Tweet.adelete().where(
            Tweet.user.in_(User.aselect(User.id).where(User.name == "alice")))
        gc.collect()
    assert [t.body for t in rows] == ["b1"] and n == 3
    assert unawaited_warnings(record) == []


async def test_printed_query_does_not_warn(data):
    User = data.User
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        q = User.aselect().where(User.name == "x")
        text = str(q)
        ins = User.ainsert(name="y")
        sql, params = ins.sql()
        del q, ins
        gc.collect()
    assert "ap_user" in text and "INSERT" in sql and params == ["y", 0]
    assert unawaited_warnings(record) == []
    assert await User.aselect().where(User.name == "y").acount() == 0


# -- aexecute() on every kind of query ---------------------------------------------------------


async def test_aexecute_on_awaitable_select_insert_update_delete(data):
    User = data.User
    wrapper = await User.aselect().where(User.age == 30).order_by(User.name).aexecute()
    assert isinstance(wrapper, peewee.CursorWrapper)
    assert [u.name for u in wrapper] == ["alice", "carol"]
    pk = await User.ainsert(name="dave").aexecute()
    assert (await User.aget_by_id(pk)).name == "dave"
    assert await User.aupdate(age=5).where(User.name == "dave").aexecute() == 1
    assert await User.adelete().where(User.name == "dave").aexecute() == 1
    assert await User.aselect().acount() == 3


async def test_araw_gives_model_instances(db, data):
    User = data.User
    q = User.araw(f"SELECT * FROM ap_user WHERE age > {db.param} ORDER BY name", 18)
    assert isinstance(q, apeewee.AsyncModelRaw)
    rows = await q
    assert [(u.name, type(u)) for u in rows] == [("alice", User), ("carol", User)]
    wrapper = await User.araw(f"SELECT name FROM ap_user WHERE name = {db.param}",
                              "bob").dicts().aexecute()
    assert list(wrapper) == [{"name": "bob"}]


async def test_compound_query_aexecute(data):
    User = data.User
    q = (User.aselect(User.name).where(User.age < 20)
         | User.aselect(User.name).where(User.name == "carol"))
    wrapper = await q.order_by(User.name).aexecute()
    assert [u.name for u in wrapper] == ["bob", "carol"]
    assert await q.acount() == 2


async def test_bound_table_queries_aexecute(db, data):
    T = peewee.Table("ap_user", ("id", "name", "age")).bind(db)
    await T.insert(name="tab", age=7).aexecute()
    rows = list(await T.select(T.name, T.age).where(T.name == "tab").aexecute())
    assert rows == [{"name": "tab", "age": 7}]
    assert await T.update(age=8).where(T.name == "tab").aexecute() == 1
    assert list(await T.select(T.age).where(T.name == "tab").tuples().aexecute()) == [(8,)]
    assert await T.delete().where(T.age > 18).aexecute() == 2
    assert await data.User.aselect().acount() == 2


async def test_plain_peewee_queries_aexecute(data):
    User = data.User
    wrapper = await User.select().where(User.age == 30).order_by(User.name).aexecute()
    assert [u.name for u in wrapper] == ["alice", "carol"]
    pk = await User.insert(name="plain", age=1).aexecute()
    assert (await User.aget_by_id(pk)).name == "plain"
    assert await User.update(age=2).where(User.name == "plain").aexecute() == 1
    assert await User.delete().where(User.name == "plain").aexecute() == 1
    assert await User.select().where(User.age == 30).aexecute() is not None


async def test_db_aexecute(db, data):
    User = data.User
    wrapper = await db.aexecute(User.select(User.name).where(User.age < 20))
    assert [u.name for u in wrapper] == ["bob"]
    pk = await db.aexecute(User.insert(name="viadb", age=3))
    assert (await User.aget_by_id(pk)).name == "viadb"
    assert await db.aexecute(User.update(age=4).where(User.name == "viadb")) == 1
    assert await db.aexecute(User.delete().where(User.name == "viadb")) == 1
    compound = User.select(User.name).where(User.age < 20) | User.select(User.name).where(
        User.age > 20)
    assert sorted(u.name for u in await db.aexecute(compound)) == ["alice", "bob", "carol"]


async def test_db_aexecute_sql_returns_result(db, data):
    p = db.param
    result = await db.aexecute_sql(
        f"SELECT name, age FROM ap_user WHERE age >= {p} ORDER BY name", (18,))
    assert isinstance(result, apeewee.Result)
    assert [d[0] for d in result.description] == ["name", "age"]
    assert tuple(result.fetchone()) == ("alice", 30)
    assert [tuple(r) for r in result.fetchall()] == [("carol", 30)]
    assert result.fetchone() is None
    upd = await db.aexecute_sql(f"UPDATE ap_user SET age = {p} WHERE age = {p}", (1, 30))
    assert upd.rowcount == 2
    none = await db.aexecute_sql("SELECT 1 WHERE 1 = 0")
    assert none.fetchall() == [] and none.fetchone() is None


# -- a write outside a transaction is committed when its await returns -------------------------


async def _write_acreate(db, User):
    await User.acreate(name="w", age=0)
    return "WHERE name = 'w'", 1


async def _write_ainsert_many(db, User):
    await User.ainsert_many([{"name": "w1"}, {"name": "w2"}])
    return "WHERE name IN ('w1', 'w2')", 2


async def _write_aupdate(db, User):
    await User.aupdate(age=55).where(User.age == 30)
    return "WHERE age = 55", 2


async def _write_adelete(db, User):
    await User.adelete().where(User.age == 30)
    return "", 1


async def _write_asave(db, User):
    bob = await User.aget(name="bob")
    bob.age = 56
    await bob.asave()
    return "WHERE age = 56", 1


async def _write_abulk_create(db, User):
    await User.abulk_create([User(name=f"b{i}") for i in range(3)], batch_size=2)
    return "WHERE name LIKE 'b_'", 3


async def _write_aexecute_sql(db, User):
    await db.aexecute_sql(f"INSERT INTO ap_user (name, age) VALUES ({db.param}, {db.param})",
                          ("sql", 1))
    return "WHERE name = 'sql'", 1


async def _write_plain_aexecute(db, User):
    await User.insert(name="plain", age=2).aexecute()
    return "WHERE name = 'plain'", 1


async def _write_aget_or_create(db, User):
    await User.aget_or_create(name="goc")
    return "WHERE name = 'goc'", 1


@pytest.mark.parametrize("write", [
    _write_acreate, _write_ainsert_many, _write_aupdate, _write_adelete, _write_asave,
    _write_abulk_create, _write_aexecute_sql, _write_plain_aexecute, _write_aget_or_create,
], ids=lambda f: f.__name__.removeprefix("_write_"))
async def test_write_outside_transaction_is_committed_on_return(backend, db, data, write):
    where, expected = await write(db, data.User)
    assert await outside_count(backend, db, "ap_user", where) == expected
    assert db.pool_stats().in_use == 0


async def test_acount_asks_count_star_when_that_cannot_change_the_answer(data, caplog):
    User = data.User
    with caplog.at_level(logging.DEBUG, logger="apeewee"):
        assert await User.aselect().where(User.age == 30).acount() == 2
    sqls = [r.msg[0] for r in caplog.records if isinstance(r.msg, tuple)]
    assert any("COUNT(*)" in sql and "_wrapped" not in sql for sql in sqls), sqls
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="apeewee"):
        assert await User.aselect(User.age).group_by(User.age).acount() == 2
        assert await User.aselect().order_by(User.id).limit(1).acount() == 1
        assert await User.aselect().order_by(User.id).limit(1).acount(clear_limit=True) == 3
    sqls = [r.msg[0] for r in caplog.records if isinstance(r.msg, tuple)]
    assert sum("_wrapped" in sql for sql in sqls) == 2, sqls


async def test_with_related_loads_relations_through_peewee(data):
    User, Tweet = data.User, data.Tweet
    users = await User.aselect().order_by(User.name).with_related(User.tweets)
    by_name = {u.name: sorted(t.body for t in u.tweets) for u in users}
    expected = {}
    for tweet in await Tweet.aselect(Tweet, User).join(User):
        expected.setdefault(tweet.user.name, []).append(tweet.body)
    for name in by_name:
        assert by_name[name] == sorted(expected.get(name, []))
    assert sum(len(v) for v in by_name.values()) == await Tweet.aselect().acount()


async def test_compound_of_compound_stays_awaitable(data, backend):
    User = data.User
    names = User.aselect(User.name)
    both = (names.where(User.age == 30) | names.where(User.name == "bob")) - names.where(
        User.name == "carol")
    assert isinstance(both, apeewee.AsyncModelCompoundSelectQuery)
    rows = await both.order_by(User.name)
    assert [u.name for u in rows] == ["alice", "bob"]

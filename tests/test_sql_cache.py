"""The compiled-SQL cache gives exactly peewee's SQL and parameters, for every shape,
and the fast row builder gives exactly peewee's model instances."""

from __future__ import annotations

import datetime
import decimal
import gc
import itertools
import re
import uuid
import warnings

import peewee
import pytest
from conftest import define_models, make_db
from peewee import JOIN, SQL, fn

import apeewee
from apeewee import _peewee
from apeewee.queries.rows import RowPlans, populate


def _schema(db):
    ns = define_models(db)
    ticks = itertools.count(1)

    class Event(apeewee.Model):
        title = peewee.CharField(null=True)
        flag = peewee.BooleanField(default=False)
        amount = peewee.DecimalField(max_digits=10, decimal_places=2, null=True)
        at = peewee.DateTimeField(default=datetime.datetime.now)
        day = peewee.DateField(null=True)
        token = peewee.UUIDField(null=True)
        seq = peewee.IntegerField(default=lambda: next(ticks))

        class Meta:
            database = db
            table_name = "ap_event"

    ns.Event = Event
    return ns


# Each builder takes values and returns a query; it is compiled with several value sets.
def _builders(ns):
    User, Tweet, Event = ns.User, ns.Tweet, ns.Event
    sub = Tweet.select(Tweet.user)
    return {
        "pk": lambda v: User.aselect().where(User.id == v),
        "gt_order_limit": lambda v: User.aselect().where(User.age > v).order_by(User.id).limit(100),
        "limit_offset": lambda v: User.aselect().order_by(User.name).limit(v).offset(v * 2),
        "offset_only": lambda v: User.aselect().order_by(User.name).offset(v),
        "paginate": lambda v: User.aselect().paginate(v + 1, 10),
        "between": lambda v: User.aselect().where(User.id.between(v, v + 1000)),
        "in_list": lambda v: User.aselect().where(User.id.in_([v, v + 1, v + 2])),
        "in_empty": lambda v: User.aselect().where(User.id.in_([])),
        "is_null": lambda v: User.aselect().where((User.name == None) | (User.age == v)),  # noqa: E711
        "and_or_not": lambda v: User.aselect().where(
            (User.age >= v) & ~(User.name.startswith(f"x{v}")) | (User.id << [v])),
        "contains": lambda v: User.aselect().where(User.name.contains(str(v))),
        "fn_alias": lambda v: User.aselect(User.name, fn.LOWER(User.name).alias(f"low{v % 2}"))
        .where(fn.LENGTH(User.name) > v),
        "count_star": lambda v: User.aselect().where(User.id.between(v, v * 3))
        .order_by().select(fn.COUNT(SQL("*"))).tuples(),
        "group_having": lambda v: User.aselect(User.age, fn.COUNT(User.id).alias("n"))
        .group_by(User.age).having(fn.COUNT(User.id) > v),
        "join": lambda v: Tweet.aselect(Tweet, User).join(User, JOIN.LEFT_OUTER)
        .where((User.age > v) & (Tweet.likes < v * 2)),
        "subquery": lambda v: User.aselect().where(User.id.in_(sub.where(Tweet.likes > v))),
        "raw_sql_param": lambda v: User.aselect().where(SQL("age > %s", [v])),
        "distinct": lambda v: User.aselect(User.age).distinct().where(User.age < v),
        "bool_param": lambda v: Event.aselect().where(Event.flag == (v % 2 == 0)),
        "decimal_date_uuid": lambda v: Event.aselect().where(
            (Event.amount > decimal.Decimal(v)) & (Event.day == datetime.date(2020, 1, v % 28 + 1))
            & (Event.token != uuid.UUID(int=v))),
        "datetime": lambda v: Event.aselect().where(Event.at < datetime.datetime(2020, 1, 1, v % 24)),
        "expr_arith": lambda v: User.aselect().where((User.age + v) * 2 > User.id - v),
        "insert": lambda v: User.ainsert(name=f"n{v}", age=v),
        "insert_none": lambda v: Event.ainsert(title=None, seq=v, flag=True,
                                               at=datetime.datetime(2020, 1, 1)),
        "insert_many": lambda v: User.ainsert_many([{"name": f"a{v}", "age": v},
                                                    {"name": f"b{v}", "age": v + 1}]),
        "insert_conflict_ignore": lambda v: User.ainsert(name=f"n{v}", age=v).on_conflict_ignore(),
        "update": lambda v: User.aupdate(age=v).where(User.id == v + 7),
        "update_expr": lambda v: User.aupdate(age=User.age + v).where(User.name == f"n{v}"),
        "update_null_bool": lambda v: Event.aupdate(title=None, flag=v % 2 == 1).where(Event.id > v),
        "delete": lambda v: User.adelete().where(User.age < v),
        "for_update": lambda v: User.aselect().where(User.id == v).for_update(),
        "union": lambda v: User.aselect(User.name).where(User.age < v)
        | User.aselect(User.name).where(User.age > v * 2),
        "dicts_tuples": lambda v: User.aselect().where(User.age == v).dicts(),
        "plain_select": lambda v: User.select().where(User.age == v),
        "table_query": lambda v: peewee.Table("ap_user", ("id", "age")).select()
        .where(SQL("age") > v).bind(User._meta.database),
    }


VALUES = [5, 6, 100, 5, 7, 100, 250, 1]


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres", "mysql"])
def test_cached_compile_equals_peewee_compile(backend_name, tmp_path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _compare_compiles(backend_name, tmp_path)
        gc.collect()
    # subqueries of a query served from the cache count as used: no "never awaited"
    assert [str(w.message) for w in record] == []


def _compare_compiles(backend_name, tmp_path):
    db = make_db(backend_name, tmp_path)
    ns = _schema(db)
    for name, build in _builders(ns).items():
        if name == "for_update" and backend_name == "sqlite":
            continue
        for v in VALUES:
            query = build(v)
            expected = db.get_sql_context().sql(query).query()
            got = db._compile(query)[:2]
            assert got[0] == expected[0], (name, v)
            assert got[1] == expected[1], (name, v)
            assert [type(p) for p in got[1]] == [type(p) for p in expected[1]], (name, v)
            query._apeewee_used = True
    stats = db.sql_cache_stats()
    assert stats["hits"] > len(_builders(ns)) * 3  # most shapes are served from the cache


def test_common_shapes_are_cached(tmp_path):
    db = make_db("postgres", tmp_path)
    ns = _schema(db)
    builders = _builders(ns)
    for name in ("gt_order_limit", "insert", "update", "count_star", "join", "in_list",
                 "subquery", "raw_sql_param", "is_null", "decimal_date_uuid"):
        for v in (11, 12, 13):
            q = builders[name](v)
            q._apeewee_used = True
            db._compile(q)
        before = db.sql_cache_stats()["hits"]
        q = builders[name](14)
        q._apeewee_used = True
        assert db._compile(q)[2] is not None, name
        assert db.sql_cache_stats()["hits"] == before + 1, name


def test_callable_defaults_are_computed_afresh(tmp_path):
    db = make_db("sqlite", tmp_path)
    ns = _schema(db)
    seqs = []
    for v in range(4):
        q = ns.Event.ainsert(title=f"t{v}")
        q._apeewee_used = True
        sql, params, _ = db._compile(q)
        columns = re.search(r"\((.*?)\) VALUES", sql).group(1).split(", ")
        assert params[columns.index('"title"')] == f"t{v}"
        seqs.append(params[columns.index('"seq"')])
    # `seq` comes from a callable default: computed by peewee at every compile
    assert len(set(seqs)) == 4


def test_identical_small_ints_in_two_places(tmp_path):
    db = make_db("postgres", tmp_path)
    ns = define_models(db)
    User = ns.User
    for v in (100, 5, 100, 6):
        q = User.aselect().where(User.age > v).limit(100)
        q._apeewee_used = True
        assert db._compile(q)[1] == [v, 100]


def test_table_rename_and_clear(tmp_path):
    db = make_db("sqlite", tmp_path)
    ns = define_models(db)
    User = ns.User
    q = User.aselect().where(User.id == 1)
    q._apeewee_used = True
    db._compile(q)
    db._compile(q)
    User._meta.set_table_name("ap_user_renamed")
    try:
        q = User.aselect().where(User.id == 1)
        q._apeewee_used = True
        assert '"ap_user_renamed"' in db._compile(q)[0]
    finally:
        User._meta.set_table_name("ap_user")
    db.clear_sql_cache()
    assert db.sql_cache_stats()["shapes"] == 0


def test_cache_size_zero_disables_and_bound_holds(tmp_path):
    db = make_db("sqlite", tmp_path, sql_cache_size=0)
    User = define_models(db).User
    for v in range(3):
        q = User.aselect().where(User.id == v)
        q._apeewee_used = True
        assert db._compile(q)[2] is None
    assert db.sql_cache_stats() == {"shapes": 0, "hits": 0, "misses": 0}
    db2 = make_db("sqlite", tmp_path, sql_cache_size=2)
    User = define_models(db2).User
    for limit in range(1, 6):
        q = User.aselect().where(User.id.in_(list(range(limit))))
        q._apeewee_used = True
        db2._compile(q)
    assert db2.sql_cache_stats()["shapes"] == 2
    with pytest.raises(ValueError, match="sql_cache_size"):
        make_db("sqlite", tmp_path, sql_cache_size=-1)


# -- on the server: same shape, different values, right rows ---------------------------


async def test_one_shape_many_values_gives_the_right_rows(db, models):
    User = models.User
    ages = {f"u{i}": i for i in range(20)}  # the table, mirrored
    for name, age in ages.items():
        await User.ainsert(name=name, age=age)
    for v in (3, 17, 100, 0, 3, 18):
        rows = await User.aselect().where(User.age > v).order_by(User.id).limit(5)
        assert [u.age for u in rows] == [a for a in ages.values() if a > v][:5]
        n = await User.aselect().where(User.age.between(v, v + 4)).acount()
        assert n == len([a for a in ages.values() if v <= a <= v + 4])
        changed = await User.aupdate(age=User.age + 50).where(User.name == f"u{v}")
        assert changed == (1 if f"u{v}" in ages else 0)
        if f"u{v}" in ages:
            ages[f"u{v}"] += 50
    assert db.sql_cache_stats()["hits"] > 0


# -- rows: the fast builder equals peewee's ----------------------------------------------


async def _both_ways(db, query):
    sql, params = db.get_sql_context().sql(query).query()
    result = await db.aexecute_sql(sql, params)
    slow = populate(_peewee.cursor_wrapper(query, result), result)
    result._pos = 0
    plans = RowPlans()
    fast = populate(_peewee.cursor_wrapper(query, result), result, plans)
    again = populate(_peewee.cursor_wrapper(query, result), result, plans)  # plan reused
    return slow, fast, again, plans


def _state(obj):
    return (type(obj), list(obj.__data__.items()), obj._dirty, obj.__rel__,
            {k: v for k, v in obj.__dict__.items() if k not in ("__data__", "_dirty", "__rel__")})


async def test_fast_model_rows_equal_peewee_rows(db, models):
    User, Tweet = models.User, models.Tweet
    alice = await User.acreate(name="alice", age=30)
    await Tweet.acreate(user=alice, body="hi", likes=3)
    for query in (User.aselect(), Tweet.aselect(), User.aselect(User.name),
                  Tweet.aselect(Tweet.user, Tweet.body)):
        query._apeewee_used = True
        slow, fast, again, plans = await _both_ways(db, query)
        assert [_state(o) for o in fast] == [_state(o) for o in slow]
        assert [_state(o) for o in again] == [_state(o) for o in slow]
        assert plans._plans[0].build is not None  # the fast path was taken
    user = (await User.aselect())[0]
    assert not user.is_dirty()
    user.age = 31
    assert user.dirty_fields == [User.age]


async def test_rows_with_extra_columns_or_custom_init_use_peewee(db, models):
    User = models.User
    await User.acreate(name="bob", age=7)

    class Custom(User):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = True

        class Meta:
            table_name = "ap_user"

    upper = fn.UPPER(User.name).alias("up")
    cases = ((User.aselect(User.name, upper), False),
                              (Custom.aselect(), False),
                              (User.aselect(User.name).namedtuples(), False),
                              (User.aselect().dicts(), True),
                              (User.aselect(User.name, upper, User.id).dicts(), True),
                              (User.aselect().tuples(), True),
                              (User.aselect(upper, User.age).tuples(), True))
    for query, _ in cases:
        query._apeewee_used = True
    for query, takes_fast in cases:
        slow, fast, again, plans = await _both_ways(db, query)
        if isinstance(slow[0], User):
            assert [_state(o) for o in fast] == [_state(o) for o in slow]
        else:
            assert fast == again == slow
            assert [(type(r).__name__, getattr(r, "_fields", None)) for r in fast] == [
                (type(r).__name__, getattr(r, "_fields", None)) for r in slow]
            if isinstance(slow[0], dict):
                assert [list(r) for r in fast] == [list(r) for r in slow]  # key order
        assert (plans._plans[0].build is not None) is takes_fast, query
    rows = await Custom.aselect()
    assert rows[0].seen is True
    rows = await User.aselect(User.name, fn.UPPER(User.name).alias("up"))
    assert rows[0].up == "BOB"


async def test_driver_values_of_another_type_still_go_through_peewee(db, backend):
    # SQLite hands DateTimeField values back as text: peewee's converter parses them.
    class Stamp(db.Model):
        at = peewee.DateTimeField()
        note = peewee.TextField(null=True)

        class Meta:
            table_name = "ap_stamp"

    await db.adrop_tables([Stamp])
    await db.acreate_tables([Stamp])
    try:
        when = datetime.datetime(2021, 5, 6, 7, 8, 9)
        await Stamp.acreate(at=when, note=None)
        await Stamp.acreate(at=when, note="x")
        for _ in range(2):
            rows = await Stamp.aselect().order_by(Stamp.id)
            assert [(r.at, r.note) for r in rows] == [(when, None), (when, "x")]
            assert type(rows[0].at) is datetime.datetime
    finally:
        await db.adrop_tables([Stamp])


def test_subqueries_of_a_cached_query_do_not_warn(tmp_path):
    db = make_db("sqlite", tmp_path)
    ns = _schema(db)
    builders = _builders(ns)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for v in (1, 2, 3, 4):
            for name in ("union", "subquery"):
                q = builders[name](v)
                q._apeewee_used = True
                db._compile(q)  # no peewee compile besides: hits only walk the tree
            gc.collect()
    assert db.sql_cache_stats()["hits"] >= 4
    assert [str(w.message) for w in record] == []


async def test_sqlite_datetime_text_parses_as_peewee_does(tmp_path):
    # text datetimes are SQLite's storage
    db = make_db("sqlite", tmp_path)

    class Stamp(db.Model):
        at = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "ap_stamp_text"

    await db.acreate_tables([Stamp])
    texts = ["2021-05-06 07:08:09", "2021-05-06T07:08:09.123", "2021-05-06 07:08:09Z",
             "2021-05-06", "2021-05-06 07:08:09.5+02:00", "not a date", "", None]
    for text in texts:
        await db.aexecute_sql('INSERT INTO "ap_stamp_text" ("at") VALUES (?)', [text])
    expected = [Stamp.at.python_value(t) for t in texts]
    # whole columns of clean text take the quick parser; any odd value sends the column
    # through peewee's converter: both must give peewee's values
    for query in (Stamp.aselect().order_by(Stamp.id),
                  Stamp.aselect().where(Stamp.id <= 3).order_by(Stamp.id)):
        rows = await query
        got = [r.at for r in rows]
        assert got == expected[:len(got)]
        assert [type(v) for v in got] == [type(v) for v in expected[:len(got)]]
    await db.close_pool()


async def test_async_for_builds_rows_in_chunks_equal_to_await(db, models):
    User = models.User
    async with db.atomic():
        await User.ainsert_many([{"name": f"u{i:05d}", "age": i % 90} for i in range(2500)])
    for query in (User.aselect().order_by(User.id), User.aselect().order_by(User.id).tuples(),
                  User.aselect(User.name).order_by(User.id).dicts()):
        awaited = await query
        iterated = [row async for row in query]
        assert len(iterated) == 2500
        if isinstance(awaited[0], User):
            assert [_state(o) for o in iterated] == [_state(o) for o in awaited]
        else:
            assert iterated == awaited


# -- holes found in review: each must give peewee's own compile ---------------------------


def _same_as_peewee(db, query):
    query._apeewee_used = True
    expected = db.get_sql_context().sql(query).query()
    assert db._compile(query)[:2] == expected
    return expected


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres", "mysql"])
def test_callable_defaults_returning_none_or_bools_are_not_frozen(backend_name, tmp_path):
    db = make_db(backend_name, tmp_path)
    state = {"owner": None, "flag": False}
    calls = []

    def next_owner():
        calls.append(1)
        return state["owner"]

    class T(db.Model):
        owner = peewee.IntegerField(null=True, default=next_owner)
        b = peewee.CharField(null=True)
        f = peewee.BooleanField(default=lambda: state["flag"])

    for _ in range(3):
        _, params = _same_as_peewee(db, T.ainsert(b="x"))
    state.update(owner=42, flag=True)
    q = T.ainsert(b="y")
    q._apeewee_used = True
    calls.clear()
    params = db._compile(q)[1]
    assert 42 in params and True in params and "y" in params
    assert len(calls) == 1  # peewee's one call per compile; no extra calls for probes


def test_one_subquery_used_twice_is_not_two_equal_subqueries(tmp_path):
    db = make_db("sqlite", tmp_path)

    class T(db.Model):
        a = peewee.IntegerField(null=True)

    def shared(v):
        sub = T.select(T.a).where(T.a > v)
        return T.aselect(sub.c.a).from_(sub)

    def separate(v):
        s1 = T.select(T.a).where(T.a > v)
        s2 = T.select(T.a).where(T.a > v)
        return T.aselect(s1.c.a).from_(s2)

    for order in ((separate, shared), (shared, separate)):
        db.clear_sql_cache()
        for build in order * 3:
            _same_as_peewee(db, build(5))


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres", "mysql"])
def test_db_value_giving_sql_for_some_values(backend_name, tmp_path):
    db = make_db(backend_name, tmp_path)

    class SentinelField(peewee.IntegerField):
        def db_value(self, value):
            return SQL("DEFAULT") if value == 0 else super().db_value(value)

    class T(db.Model):
        a = peewee.IntegerField(null=True)
        s = SentinelField(null=True)

    for v in (5, 6, 0, 7, 0):
        _same_as_peewee(db, T.aupdate(s=v).where(T.a == 1))


async def test_odd_column_names_build_the_same_rows(db, models):
    # Row builders are generated code with the column names as literals: names that
    # look like code must stay plain dict keys.
    User = models.User
    await User.acreate(name="zed", age=3)
    odd = "x'} or {'y: 1"
    for query in (User.aselect(User.name.alias(odd), User.age).dicts(),
                  User.aselect(User.name.alias("{data}"), User.id).dicts()):
        query._apeewee_used = True
        slow, fast, again, plans = await _both_ways(db, query)
        assert fast == again == slow
        assert plans._plans[0].build is not None
    rows = await User.aselect(User.name.alias(odd)).dicts()
    assert rows == [{odd: "zed"}]


def test_one_cache_used_from_two_threads(tmp_path):
    # A database used from event loops in two threads shares its compiled-SQL cache; a
    # tiny cache makes the threads evict each other's shapes all the time.
    import threading

    db = make_db("sqlite", tmp_path, sql_cache_size=2)
    User = define_models(db).User
    shapes = [lambda v: User.aselect().where(User.id == v),
              lambda v: User.aselect().where(User.age > v).limit(v),
              lambda v: User.aupdate(age=v).where(User.name == str(v))]
    errors = []

    def work(seed):
        try:
            for i in range(1500):
                query = shapes[(i + seed) % 3](i)
                query._apeewee_used = True
                expected = db.get_sql_context().sql(query).query()
                if db._compile(query)[:2] != expected:
                    errors.append((i, expected))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert db.sql_cache_stats()["shapes"] <= 2


# -- second review: rows and the primary-key lookup ---------------------------------------


async def test_foreign_key_converter_giving_an_instance_uses_peewee(db, models):
    User = models.User

    class LoadingFK(peewee.ForeignKeyField):
        def python_value(self, value):
            return None if value is None else self.rel_model(id=value, name="loaded")

    class Note(db.Model):
        user = LoadingFK(User, null=True)
        body = peewee.CharField(null=True)

        class Meta:
            table_name = "ap_note"

    await db.adrop_tables([Note])
    await db.acreate_tables([Note])
    try:
        alice = await User.acreate(name="alice", age=1)
        await Note.acreate(user=alice, body="b")
        query = Note.aselect()
        query._apeewee_used = True
        slow, fast, _again, plans = await _both_ways(db, query)
        assert [_state(o) for o in fast] == [_state(o) for o in slow]
        assert fast[0].__data__["user"] == alice.id and fast[0].__rel__["user"].name == "loaded"
        assert plans._plans[0].build is None  # peewee's process_row
        # the suite's own Tweet.user (a plain foreign key) keeps the fast path
        tweet_query = models.Tweet.aselect()
        tweet_query._apeewee_used = True
        await models.Tweet.acreate(user=alice, body="t")
        assert (await _both_ways(db, tweet_query))[3]._plans[0].build is not None
    finally:
        await db.adrop_tables([Note])


async def test_namedtuple_plans_do_not_keep_rows_alive(db, models):
    User = models.User
    await User.acreate(name="n", age=1)
    query = User.aselect(User.name).namedtuples()
    query._apeewee_used = True
    slow, fast, _again, plans = await _both_ways(db, query)
    assert [tuple(r) for r in fast] == [tuple(r) for r in slow] == [("n",)]
    # its constructor closes over the wrapper, which holds the rows: not kept in the plan
    assert plans._plans[0].state is None
    for _ in range(2):  # learned, then from the cache: initialized each time
        rows = await User.aselect(User.name).namedtuples()
        assert [tuple(r) for r in rows] == [("n",)] and rows[0].name == "n"


def test_clear_sql_cache_also_forgets_primary_key_lookups(tmp_path):
    from apeewee.models import _pk_lookup

    db = make_db("sqlite", tmp_path)
    User = define_models(db).User
    assert '"name"' in _pk_lookup(User, db)[0]
    column = User.name.column_name
    User.name.column_name = "nm"
    try:
        db.clear_sql_cache()
        assert '"nm"' in _pk_lookup(User, db)[0]
    finally:
        User.name.column_name = column
        db.clear_sql_cache()
    User._meta.schema = "main"
    try:
        assert '"main"."ap_user"' in _pk_lookup(User, db)[0]  # a schema change is seen
    finally:
        User._meta.schema = None
    assert _pk_lookup(User, make_db("sqlite", tmp_path, sql_cache_size=0)) is None


def test_a_shape_with_many_variants_stops_learning(tmp_path):
    # An alias that changes with every call is a fixed leaf: each value is a variant.
    # After eight, and for a variant that could not be learned, peewee just compiles.
    db = make_db("sqlite", tmp_path)
    User = define_models(db).User
    cache = db._sql_cache
    probes = []
    real_probe = cache._probe
    cache._probe = lambda *args: probes.append(1) or real_probe(*args)
    for n in range(20):
        _same_as_peewee(db, User.aselect(User.name.alias(f"n{n}")).where(User.id == n))
    assert len(probes) == 8
    (entry,) = [e for e in cache._entries.values() if e is not None]
    assert len(entry.variants) == 8

    class Odd(peewee.IntegerField):
        def db_value(self, value):
            return SQL("DEFAULT") if value == 0 else super().db_value(value)

    class T(db.Model):
        a = peewee.IntegerField(null=True)
        s = Odd(null=True)
        flag = peewee.BooleanField(null=True)

    probes.clear()
    for v in (5, 6, 7):  # learned once
        _same_as_peewee(db, T.aupdate(s=v, flag=True).where(T.a == 1))
    for v in (0, 0, 0):  # same shape, another variant (flag=None); 0 cannot be learned
        _same_as_peewee(db, T.aupdate(s=v, flag=None).where(T.a == 1))
    assert len(probes) == 2  # one per variant, none repeated for the failed one

"""apeewee.Model: coroutines with peewee's semantics, DDL helpers, the sync guard, datatypes."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import time
import uuid

import peewee
import pytest
from conftest import define_models, outside_count

import apeewee


@pytest.fixture
async def models(models, db, backend):
    # peewee names ap_user's unique index "user_name" (from the model's name); on
    # PostgreSQL index names are schema-wide, so a stray "user" table in the test
    # database silently suppresses it (CREATE UNIQUE INDEX IF NOT EXISTS). Make sure
    # ap_user.name is unique, as the schema says, whatever else lives in the database.
    if backend == "postgres":
        await db.aexecute_sql(
            'CREATE UNIQUE INDEX IF NOT EXISTS "apm_user_name_uniq" ON "ap_user" ("name")')
    return models


# -- get / create ---------------------------------------------------------------------------


async def test_acreate_inserts_and_returns_instance(backend, db, models):
    User = models.User
    alice = await User.acreate(name="alice", age=30)
    assert isinstance(alice, User) and isinstance(alice.id, int)
    assert alice.name == "alice" and alice.age == 30
    bob = await User.acreate(name="bob")
    assert bob.id != alice.id and bob.age == 0  # field default
    assert await outside_count(backend, db, "ap_user") == 2


async def test_aget_by_pk_expression_and_filters(models):
    User = models.User
    alice = await User.acreate(name="alice", age=30)
    await User.acreate(name="bob", age=30)
    assert (await User.aget(alice.id)).name == "alice"  # bare int: primary key
    assert (await User.aget(User.name == "bob")).age == 30
    assert (await User.aget(User.age == 30, User.name == "alice")).id == alice.id
    assert (await User.aget(name="bob", age=30)).name == "bob"
    assert (await User.aget(age__gt=10, name="alice")).id == alice.id  # peewee filter()
    with pytest.raises(User.DoesNotExist):
        await User.aget(User.name == "nobody")
    with pytest.raises(peewee.DoesNotExist):
        await User.aget(alice.id + 1000)


async def test_aget_or_none(models):
    User = models.User
    alice = await User.acreate(name="alice")
    assert (await User.aget_or_none(User.name == "alice")).id == alice.id
    assert (await User.aget_or_none(name="alice")).id == alice.id
    assert await User.aget_or_none(User.name == "nobody") is None
    assert await User.aget_or_none(name="nobody") is None


async def test_aget_by_id(models):
    User, Counter = models.User, models.Counter
    alice = await User.acreate(name="alice")
    assert (await User.aget_by_id(alice.id)).name == "alice"
    with pytest.raises(User.DoesNotExist):
        await User.aget_by_id(alice.id + 1)
    await Counter.ainsert(key="hits", value=3)
    assert (await Counter.aget_by_id("hits")).value == 3


async def test_aget_or_create_gets_existing_or_creates_with_defaults(models):
    User = models.User
    alice, created = await User.aget_or_create(name="alice", defaults={"age": 30})
    assert created is True and alice.age == 30 and isinstance(alice.id, int)
    again, created = await User.aget_or_create(name="alice", defaults={"age": 99})
    assert created is False and again.id == alice.id and again.age == 30
    assert await User.aselect().acount() == 1


async def test_aget_or_create_is_race_safe(backend, db, models):
    User = models.User
    results = await asyncio.gather(
        *(User.aget_or_create(name="racer", defaults={"age": i}) for i in range(10)))
    assert [created for _, created in results].count(True) == 1
    assert len({user.id for user, _ in results}) == 1
    assert await outside_count(backend, db, "ap_user", "WHERE name = 'racer'") == 1
    assert db.pool_stats().in_use == 0


async def test_aget_or_create_inside_a_transaction(db, models):
    User = models.User
    await User.acreate(name="alice")
    async with db.atomic():
        _, created = await User.aget_or_create(name="alice")
        bob, created_bob = await User.aget_or_create(name="bob")
        assert created is False and created_bob is True and bob.name == "bob"
    assert await User.aselect().acount() == 2


# -- by id ---------------------------------------------------------------------------------


async def test_adelete_by_id(models):
    User = models.User
    alice = await User.acreate(name="alice")
    await User.acreate(name="bob")
    assert await User.adelete_by_id(alice.id) == 1
    assert await User.adelete_by_id(alice.id) == 0
    assert [u.name for u in await User.aselect()] == ["bob"]


async def test_aset_by_id_inserts_or_updates(models):
    User = models.User
    pk = await User.aset_by_id(None, {"name": "alice", "age": 1})
    assert (await User.aget_by_id(pk)).name == "alice"
    assert await User.aset_by_id(pk, {"age": 42}) == 1
    assert (await User.aget_by_id(pk)).age == 42
    assert await User.aset_by_id(pk + 100, {"age": 1}) == 0


# -- bulk ----------------------------------------------------------------------------------


async def test_abulk_create_in_batches(backend, db, models):
    User = models.User
    users = [User(name=f"u{i:02d}", age=i) for i in range(7)]
    assert await User.abulk_create(users, batch_size=3) is None
    rows = await User.aselect().order_by(User.name)
    assert [(u.name, u.age) for u in rows] == [(f"u{i:02d}", i) for i in range(7)]
    if backend == "postgres":  # primary keys come back through RETURNING
        assert [u.id for u in users] == [u.id for u in rows]
    assert await outside_count(backend, db, "ap_user") == 7


async def test_abulk_create_in_a_transaction_is_atomic(db, models):
    User = models.User
    await User.acreate(name="u3")
    with pytest.raises(peewee.IntegrityError):
        async with db.atomic():
            await User.abulk_create([User(name=f"u{i}") for i in range(6)], batch_size=2)
    assert [u.name for u in await User.aselect()] == ["u3"]


async def test_abulk_update_integer_field_in_batches(models):
    User = models.User
    users = [await User.acreate(name=f"u{i}", age=i) for i in range(5)]
    for user in users:
        user.age += 10
        user.name = "not saved"
    assert await User.abulk_update(users, fields=[User.age], batch_size=2) == 5
    rows = await User.aselect().order_by(User.id)
    assert [(u.name, u.age) for u in rows] == [(f"u{i}", i + 10) for i in range(5)]


async def test_abulk_update_text_field(models):
    User = models.User
    users = [await User.acreate(name=f"u{i}", age=i) for i in range(3)]
    for user in users:
        user.name = user.name.upper()
    assert await User.abulk_update(users[:2], fields=["name"]) == 2
    rows = await User.aselect().order_by(User.id)
    assert [(u.name, u.age) for u in rows] == [("U0", 0), ("U1", 1), ("u2", 2)]


# -- instance save / delete ----------------------------------------------------------------


async def test_asave_inserts_new_then_updates(backend, db, models):
    User = models.User
    user = User(name="alice", age=1)
    assert await user.asave() == 1
    assert isinstance(user.id, int)
    pk = user.id
    user.age = 2
    assert await user.asave() == 1
    assert user.id == pk
    assert (await User.aget_by_id(pk)).age == 2
    assert await outside_count(backend, db, "ap_user", "WHERE age = 2") == 1


async def test_asave_only_writes_the_given_fields(models):
    User = models.User
    user = await User.acreate(name="alice", age=1)
    user.name = "changed"
    user.age = 99
    assert await user.asave(only=[User.age]) == 1
    fresh = await User.aget_by_id(user.id)
    assert (fresh.name, fresh.age) == ("alice", 99)


async def test_asave_force_insert_with_explicit_primary_key(models):
    Counter = models.Counter
    # Non-auto primary key: save() without force_insert is an UPDATE of nothing.
    assert await Counter(key="hits", value=1).asave() == 0
    assert await Counter.aselect().acount() == 0
    assert await Counter(key="hits", value=1).asave(force_insert=True) == 1
    assert (await Counter.aget_by_id("hits")).value == 1
    counter = await Counter.aget_by_id("hits")
    counter.value = 5
    assert await counter.asave() == 1
    assert (await Counter.aget_by_id("hits")).value == 5
    with pytest.raises(peewee.IntegrityError):
        await Counter(key="hits").asave(force_insert=True)


async def test_only_save_dirty_asave_returns_false_when_clean(db, models):
    class DirtyUser(apeewee.Model):
        name = peewee.CharField(max_length=64)
        age = peewee.IntegerField(default=0)

        class Meta:
            database = db
            table_name = "ap_user"
            only_save_dirty = True

    await models.User.acreate(name="alice", age=1)
    user = await DirtyUser.aget(DirtyUser.name == "alice")
    assert await user.asave() is False
    user.age = 7
    assert await user.asave() == 1
    assert await user.asave() is False
    assert (await models.User.aget(name="alice")).age == 7


async def test_adelete_instance(models):
    User = models.User
    alice = await User.acreate(name="alice")
    await User.acreate(name="bob")
    assert await alice.adelete_instance() == 1
    assert [u.name for u in await User.aselect()] == ["bob"]


async def test_adelete_instance_recursive_deletes_dependents(backend, db, models):
    User, Tweet = models.User, models.Tweet
    alice = await User.acreate(name="alice")
    bob = await User.acreate(name="bob")
    for body in ("a1", "a2"):
        await Tweet.acreate(user=alice, body=body)
    await Tweet.acreate(user=bob, body="b1")
    assert await alice.adelete_instance(recursive=True) == 1
    assert [t.body for t in await Tweet.aselect()] == ["b1"]
    assert await outside_count(backend, db, "ap_tweet") == 1
    assert await outside_count(backend, db, "ap_user") == 1


# -- DDL and introspection -------------------------------------------------------------------


def define_extra(db):
    class Owner(apeewee.Model):
        label = peewee.CharField(max_length=20)

        class Meta:
            database = db
            table_name = "apm_owner"

    class Pet(apeewee.Model):
        owner = peewee.ForeignKeyField(Owner, backref="pets")
        label = peewee.CharField(max_length=20, index=True)

        class Meta:
            database = db
            table_name = "apm_pet"

    return Owner, Pet


async def test_acreate_tables_table_exists_get_tables_adrop_tables(db):
    Owner, Pet = define_extra(db)
    await db.adrop_tables([Owner, Pet])
    assert await db.atable_exists("apm_pet") is False
    try:
        await db.acreate_tables([Pet, Owner])  # created in dependency order
        assert await db.atable_exists("apm_owner") is True
        assert await db.atable_exists(Pet) is True
        tables = await db.aget_tables()
        assert {"apm_owner", "apm_pet"} <= set(tables)
        await db.acreate_tables([Owner, Pet])  # safe: IF NOT EXISTS
        owner = await Owner.acreate(label="o")
        await Pet.acreate(owner=owner, label="p")
        assert await Pet.aselect().join(Owner).where(Owner.label == "o").acount() == 1
    finally:
        await db.adrop_tables([Owner, Pet])
    assert await db.atable_exists("apm_owner") is False
    assert not {"apm_owner", "apm_pet"} & set(await db.aget_tables())
    assert db.pool_stats().in_use == 0


# -- synchronous calls refuse to block -------------------------------------------------------


def printed(query):
    str(query)  # compiled: an awaitable query that is not awaited here must not warn
    return query


SYNC_CALLS = {
    "select_execute": (lambda ns: ns.User.select().execute(), "query.aexecute()"),
    "aselect_execute": (lambda ns: printed(ns.User.aselect()).execute(), "query.aexecute()"),
    "list_select": (lambda ns: list(ns.User.select()), "async for"),
    "iterate_select": (lambda ns: [u for u in ns.User.select()], "async for"),
    "query_count": (lambda ns: ns.User.select().count(), "acount"),
    "get": (lambda ns: ns.User.get(ns.User.name == "alice"), "aget"),
    "get_or_create": (lambda ns: ns.User.get_or_create(name="zed"), "aget_or_create"),
    "create": (lambda ns: ns.User.create(name="zed"), "acreate"),
    "save": (lambda ns: ns.alice.save(), "asave"),
    "delete_instance": (lambda ns: ns.alice.delete_instance(), "adelete_instance"),
    "lazy_foreign_key": (lambda ns: ns.tweet.user, "join"),
    "backref": (lambda ns: list(ns.alice.tweets), "async for"),
    "execute_sql": (lambda ns: ns.db.execute_sql("SELECT 1"), "aexecute_sql"),
    "create_tables": (lambda ns: ns.db.create_tables([ns.User]), "acreate_tables"),
}


@pytest.mark.parametrize("call", list(SYNC_CALLS))
async def test_sync_call_raises_sync_query_error_naming_async_call(db, call):
    # No tables needed: every one of these must be refused before any I/O.
    ns = define_models(db)
    ns.db = db
    ns.alice = ns.User(id=1, name="alice")
    ns.tweet = ns.Tweet(id=1, user_id=1, body="hi")  # as fetched without joining User
    fn, hint = SYNC_CALLS[call]
    before = db.pool_stats().acquired_total
    started = time.perf_counter()
    with pytest.raises(apeewee.SyncQueryError) as info:
        fn(ns)
    assert time.perf_counter() - started < 0.5  # refused at once, never blocks
    assert isinstance(info.value, peewee.InterfaceError)
    assert hint in str(info.value)
    assert db.pool_stats().acquired_total == before  # no connection was even taken


async def test_sync_calls_write_nothing_and_leave_the_async_api_working(db, models):
    User, Tweet = models.User, models.Tweet
    alice = await User.acreate(name="alice")
    await Tweet.acreate(user=alice, body="hi")
    tweet = await Tweet.aget(Tweet.body == "hi")  # fetched without joining User
    for call in (lambda: User.create(name="bob"), lambda: alice.delete_instance(),
                 lambda: User.insert(name="carol").execute(), lambda: tweet.user,
                 lambda: User.delete().execute(), lambda: models.Counter.create(key="k")):
        with pytest.raises(apeewee.SyncQueryError):
            call()
    assert db.pool_stats().in_use == 0
    assert [u.name for u in await User.aselect()] == ["alice"]
    assert [t.body for t in await Tweet.aselect()] == ["hi"]
    assert await models.Counter.aselect().acount() == 0
    assert (await Tweet.aselect(Tweet, User).join(User).aget()).user.name == "alice"


async def test_sync_call_inside_transaction_still_raises(db, models):
    User = models.User
    async with db.atomic():
        await User.acreate(name="alice")
        with pytest.raises(apeewee.SyncQueryError, match="aget"):
            User.get(User.name == "alice")
        with pytest.raises(apeewee.SyncQueryError, match="acreate"):
            User.create(name="bob")
        assert await User.aselect().acount() == 1
    assert [u.name for u in await User.aselect()] == ["alice"]


# -- datatypes --------------------------------------------------------------------------------


def define_kinds(db):
    class Kinds(apeewee.Model):
        stamp = peewee.DateTimeField(null=True)
        day = peewee.DateField(null=True)
        price = peewee.DecimalField(max_digits=10, decimal_places=2, null=True)
        flag = peewee.BooleanField(null=True)
        ratio = peewee.FloatField(null=True)
        body = peewee.TextField(null=True)
        data = peewee.BlobField(null=True)
        uid = peewee.UUIDField(null=True)
        label = peewee.CharField(max_length=30, null=True)

        class Meta:
            database = db
            table_name = "apm_kinds"

    return Kinds


@pytest.fixture
async def kinds(db):
    Kinds = define_kinds(db)
    await db.adrop_tables([Kinds])
    await db.acreate_tables([Kinds])
    yield Kinds
    await db.adrop_tables([Kinds])


async def test_datatypes_roundtrip(kinds):
    values = {
        "stamp": datetime.datetime(2024, 2, 29, 13, 45, 7),
        "day": datetime.date(1999, 12, 31),
        "price": decimal.Decimal("12345.67"),
        "flag": True,
        "ratio": 2.5,
        "body": "héllo wörld ✓ " + "x" * 2000,
        "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "label": "label",
    }
    row = await kinds.acreate(**values)
    got = await kinds.aget_by_id(row.id)
    for name, value in values.items():
        assert getattr(got, name) == value, name
        assert isinstance(getattr(got, name), type(value)), name
    false_row = await kinds.acreate(flag=False, ratio=-0.25, price=decimal.Decimal("-1.50"))
    got = await kinds.aget_by_id(false_row.id)
    assert (got.flag, got.ratio, got.price) == (False, -0.25, decimal.Decimal("-1.50"))
    # Values also compare correctly in WHERE clauses.
    assert await kinds.aselect().where(kinds.uid == values["uid"]).acount() == 1
    assert await kinds.aselect().where(kinds.day == values["day"]).acount() == 1
    assert await kinds.aselect().where(kinds.stamp > datetime.datetime(2024, 1, 1)).acount() == 1
    assert await kinds.aselect().where(kinds.flag == False).acount() == 1  # noqa: E712


async def test_blob_roundtrip(kinds):
    payload = bytes(range(256)) * 4
    row = await kinds.acreate(data=payload)
    got = await kinds.aget_by_id(row.id)
    assert bytes(got.data) == payload
    await kinds.aupdate(data=b"").where(kinds.id == row.id)
    assert bytes((await kinds.aget_by_id(row.id)).data) == b""


async def test_nulls_roundtrip(kinds):
    row = await kinds.acreate()
    got = await kinds.aget_by_id(row.id)
    for name in ("stamp", "day", "price", "flag", "ratio", "body", "data", "uid", "label"):
        assert getattr(got, name) is None, name
    assert await kinds.aselect().where(kinds.uid.is_null()).acount() == 1
    (d,) = await kinds.aselect(kinds.data, kinds.price).dicts()
    assert d == {"data": None, "price": None}

"""The README quickstart flow, on every backend."""

from __future__ import annotations

from conftest import outside_count


async def test_quickstart_flow(backend, db, models):
    User = models.User
    alice = await User.acreate(name="alice", age=30)
    await User.acreate(name="bob", age=12)
    adults = await User.aselect().where(User.age >= 18).order_by(User.name)
    assert [u.name for u in adults] == ["alice"]
    async with db.connection():
        assert await User.aselect().acount() == 2
        same = await User.aget(User.id == alice.id)
        assert same.name == "alice"
    async with db.atomic():
        assert await User.aupdate(age=User.age + 1).where(User.name == "alice") == 1
    assert (await User.aget_by_id(alice.id)).age == 31
    assert await outside_count(backend, db, "ap_user") == 2

"""``apeewee.Model``: peewee's Model with a-prefixed coroutines beside every I/O method.

The sync methods keep their names and meaning; on an apeewee database they raise
``SyncQueryError`` naming the coroutine to use instead of blocking the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import peewee

from . import _peewee
from .queries.awaitable import (
    AsyncModelDelete,
    AsyncModelInsert,
    AsyncModelRaw,
    AsyncModelSelect,
    AsyncModelUpdate,
)
from .queries.rows import RowPlans, populate
from .routing import resolve

__all__ = ["Model"]

M = TypeVar("M", bound="Model")


def _db(model: type[peewee.Model]) -> Any:
    return resolve(model._meta.database, model.__name__)


def _pk_lookup(model: type[peewee.Model], db: Any) -> tuple[Any, ...] | None:
    """peewee's SQL for ``model.aselect().where(pk == ?).paginate(1, 1)`` on ``db``, with
    the key's converter and the other parameters; None when the shape is not fixed."""
    meta = model._meta
    sql_cache = db._sql_cache
    if sql_cache.size <= 0:
        return None
    cache = sql_cache.pk_lookups  # emptied with the compiled-SQL cache
    entry = cache.get(model)
    if (entry is not None and entry[0] is meta.sorted_fields and entry[1] == meta.table_name
            and entry[2] == meta.schema):
        return entry[3]  # type: ignore[no-any-return]
    pk = meta.primary_key
    lookup = None
    if pk is not False and not isinstance(pk, (peewee.CompositeKey, peewee.ForeignKeyField)):
        probes = []
        for sample in (1, 2):  # two keys: only the key's parameter may differ
            query = model.aselect().where(pk == peewee.Value(sample, converter=False))
            query = query.paginate(1, 1)
            probes.append(db.get_sql_context().sql(query).query())
        (sql1, params1), (sql2, params2) = probes
        if sql1 == sql2 and params1[0] == 1 and params2[0] == 2 and params1[1:] == params2[1:]:
            template = model.aselect()
            template._apeewee_used = True
            lookup = (sql1, pk.db_value, tuple(params1[1:]), template, RowPlans())
    cache[model] = (meta.sorted_fields, meta.table_name, meta.schema, lookup)
    return lookup


class Model(peewee.Model):
    """Base model for apeewee databases; set ``Meta.database`` or use ``db.Model``."""

    # -- query builders: the same as peewee's, but awaitable -----------------------------

    @classmethod
    def aselect(cls, *fields: Any) -> AsyncModelSelect:
        """``select()`` that can be awaited: ``rows = await User.aselect().where(...)``."""
        is_default = not fields
        if not fields:
            fields = tuple(cls._meta.sorted_fields)
        return AsyncModelSelect(cls, fields, is_default=is_default)

    @classmethod
    def ainsert(cls, __data: Any = None, **insert: Any) -> AsyncModelInsert:
        """``insert()`` that can be awaited; gives the new primary key."""
        return AsyncModelInsert(cls, _peewee.normalize_data(cls, __data, insert))

    @classmethod
    def ainsert_many(cls, rows: Iterable[Any], fields: Sequence[Any] | None = None
                     ) -> AsyncModelInsert:
        """``insert_many()`` that can be awaited."""
        return AsyncModelInsert(cls, insert=rows, columns=fields)

    @classmethod
    def ainsert_from(cls, query: Any, fields: Sequence[Any]) -> AsyncModelInsert:
        """``insert_from()`` that can be awaited."""
        columns = [getattr(cls, f) if isinstance(f, str) else f for f in fields]
        return AsyncModelInsert(cls, insert=query, columns=columns)

    @classmethod
    def areplace(cls, __data: Any = None, **insert: Any) -> AsyncModelInsert:
        """``replace()`` (INSERT OR REPLACE / REPLACE INTO) that can be awaited."""
        return cls.ainsert(__data, **insert).on_conflict("REPLACE")

    @classmethod
    def areplace_many(cls, rows: Iterable[Any], fields: Sequence[Any] | None = None
                      ) -> AsyncModelInsert:
        """``replace_many()`` that can be awaited."""
        return cls.ainsert_many(rows, fields).on_conflict("REPLACE")

    @classmethod
    def aupdate(cls, __data: Any = None, **update: Any) -> AsyncModelUpdate:
        """``update()`` that can be awaited; gives the number of rows changed."""
        return AsyncModelUpdate(cls, _peewee.normalize_data(cls, __data, update))

    @classmethod
    def adelete(cls) -> AsyncModelDelete:
        """``delete()`` that can be awaited; gives the number of rows deleted."""
        return AsyncModelDelete(cls)

    @classmethod
    def araw(cls, sql: str, *params: Any) -> AsyncModelRaw:
        """``raw()`` that can be awaited; rows become model instances."""
        return AsyncModelRaw(cls, sql, params)

    # -- coroutines with peewee's semantics ------------------------------------------------

    @classmethod
    async def acreate(cls: type[M], **query: Any) -> M:
        """Insert a new row and return its instance, as ``create()``."""
        inst = cls(**query)
        await inst.asave(force_insert=True)
        return inst

    @classmethod
    async def aget(cls: type[M], *query: Any, **filters: Any) -> M:
        """The one matching instance, or ``Model.DoesNotExist``, as ``get()``."""
        sq = cls.aselect()
        if query:
            if len(query) == 1 and isinstance(query[0], int) and cls._meta.auto_increment:
                sq = sq.where(cls._meta.primary_key == query[0])
            else:
                sq = sq.where(*query)
        if filters:
            sq = sq.filter(**filters)
        return await sq.aget()  # type: ignore[no-any-return]

    @classmethod
    async def aget_or_none(cls: type[M], *query: Any, **filters: Any) -> M | None:
        """As ``aget()``, but None instead of ``DoesNotExist``."""
        try:
            return await cls.aget(*query, **filters)
        except cls.DoesNotExist:
            return None

    @classmethod
    async def aget_by_id(cls: type[M], pk: Any) -> M:
        """The instance with this primary key, or ``DoesNotExist``.

        The statement is compiled by peewee once per model and database; later calls
        only convert the key (the primary-key lookup is the hottest query of most apps).
        """
        db = _db(cls)
        lookup = _pk_lookup(cls, db)
        if lookup is None or isinstance(pk, (peewee.Node, peewee.Model)):
            return await cls.aget(cls._meta.primary_key == pk)
        sql, convert, tail, template, plans = lookup
        params = [convert(pk), *tail]
        result = await db._run_sql(sql, params)
        rows = populate(_peewee.cursor_wrapper(template, result), result, plans)
        if rows:
            return rows[0]  # type: ignore[no-any-return]
        raise cls.DoesNotExist(
            f"{cls} instance matching query does not exist:\nSQL: {sql}\nParams: {params}")

    @classmethod
    async def aget_or_create(cls: type[M], **kwargs: Any) -> tuple[M, bool]:
        """``(instance, created)``. Race-safe as peewee's: the insert runs in a savepoint
        and on ``IntegrityError`` (a concurrent insert won) the row is read again."""
        defaults = kwargs.pop("defaults", {})
        query = cls.aselect()
        for field, value in kwargs.items():
            query = query.where(getattr(cls, field) == value)
        try:
            return await query.aget(), False
        except cls.DoesNotExist:
            try:
                if defaults:
                    kwargs.update(defaults)
                async with _db(cls).atomic():
                    return await cls.acreate(**kwargs), True
            except peewee.IntegrityError as exc:
                try:
                    return await query.aget(), False
                except cls.DoesNotExist:
                    raise exc from None

    @classmethod
    async def aset_by_id(cls, key: Any, value: Any) -> Any:
        """Insert (``key`` None) or update the row with this primary key, as ``set_by_id()``."""
        if key is None:
            return await cls.ainsert(value)
        return await cls.aupdate(value).where(cls._meta.primary_key == key)

    @classmethod
    async def adelete_by_id(cls, pk: Any) -> int:
        """Delete the row with this primary key; returns the row count."""
        return await cls.adelete().where(cls._meta.primary_key == pk)  # type: ignore[no-any-return]

    @classmethod
    async def abulk_create(cls, model_list: Sequence[peewee.Model],
                           batch_size: int | None = None) -> None:
        """Insert many instances, as ``bulk_create()`` (primary keys set where the
        database returns them). Wrap it in ``db.atomic()`` for one transaction."""
        await _db(cls)._replay(cls.bulk_create, model_list, batch_size)

    @classmethod
    async def abulk_update(cls, model_list: Sequence[peewee.Model], fields: Sequence[Any],
                           batch_size: int | None = None) -> int:
        """Update ``fields`` of many instances, as ``bulk_update()``; returns the row count.

        One ``UPDATE ... SET f = CASE pk WHEN ... THEN ... END`` per batch, as peewee
        does; on PostgreSQL each THEN value is cast to the column type, because the
        server types statement parameters itself (asyncpg) and would read them as text.
        """
        if isinstance(cls._meta.primary_key, peewee.CompositeKey):
            raise ValueError("bulk_update() is not supported for models with a composite "
                             "primary key.")
        db = _db(cls)
        fields = [cls._meta.fields[f] if isinstance(f, str) else f for f in fields]
        pk = cls._meta.primary_key
        models = list(model_list)
        batches = peewee.chunked(models, batch_size) if batch_size else [models]
        total = 0
        for batch in batches:
            update = {}
            for field in fields:
                whens = []
                for model in batch:
                    value = getattr(model, field.safe_name)
                    if not isinstance(value, peewee.Node):
                        value = db.case_value(field, value)
                    whens.append((pk.to_value(model._pk), value))
                update[field] = peewee.Case(pk, whens)
            ids = [model._pk for model in batch]
            total += await cls.aupdate(update).where(pk.in_(ids))
        return total

    async def asave(self, force_insert: bool = False, only: Sequence[Any] | None = None
                    ) -> int | bool:
        """Insert or update this instance, as ``save()`` (``only``, ``force_insert``,
        ``only_save_dirty``); returns the rows written (False when nothing was dirty)."""
        return await _db(type(self))._replay(self.save, force_insert, only)  # type: ignore[no-any-return]

    async def adelete_instance(self, recursive: bool = False,
                               delete_nullable: bool = False) -> int:
        """Delete this instance's row (and dependents with ``recursive``), as
        ``delete_instance()``; returns the row count."""
        return int(await _db(type(self))._replay(self.delete_instance, recursive,
                                                 delete_nullable))

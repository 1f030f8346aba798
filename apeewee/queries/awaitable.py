"""Awaitable versions of peewee's model queries: every peewee method, plus ``await``.

``await query`` executes it on the database resolved for the current task. A query that
is garbage-collected without ever being awaited (nor executed, compiled into another
query, or used to build a new one) emits a ``RuntimeWarning`` naming its SQL, as an
un-awaited coroutine does.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Generator
from typing import Any

import peewee

from ..routing import resolve_database
from .execute import iterate_query
from .replay import replay_active

__all__ = [
    "AsyncModelCompoundSelectQuery",
    "AsyncModelDelete",
    "AsyncModelInsert",
    "AsyncModelRaw",
    "AsyncModelSelect",
    "AsyncModelUpdate",
    "AwaitableQuery",
]


class AwaitableQuery:
    """Mixin for a peewee query: ``await q`` and ``await q.aexecute()`` run it."""

    _apeewee_used = False  # set on an instance once it ran or was built upon

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Built inside a replayed peewee call (count(), save()...): peewee drives it.
        self._apeewee_used = replay_active()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._aresult().__await__()

    async def _aresult(self) -> Any:
        return await self.aexecute()

    async def aexecute(self, database: Any = None, timeout: float | None = None) -> Any:
        """Execute; returns what peewee's ``execute()`` returns for this query type.
        ``timeout`` (seconds, default the database's ``query_timeout``) cancels a
        statement that runs longer, raising ``apeewee.QueryTimeout``."""
        self._apeewee_used = True
        db = resolve_database(self, database)
        return await db.aexecute(self, timeout=timeout)

    def clone(self) -> Any:
        self._apeewee_used = True  # a derived query carries on the work
        query = super().clone()  # type: ignore[misc]
        # Built inside a replayed peewee call (count(), save()...): peewee drives it.
        query._apeewee_used = replay_active()
        return query

    def __sql__(self, ctx: Any) -> Any:
        self._apeewee_used = True  # compiled: printed, or a subquery of another query
        return super().__sql__(ctx)  # type: ignore[misc]

    def __del__(self) -> None:
        if self.__dict__.get("_apeewee_used", True):
            return
        try:
            sql, _ = self.sql()  # type: ignore[attr-defined]
        except Exception:  # the database may be gone at interpreter exit
            sql = type(self).__name__
        warnings.warn(f"query was never awaited: {sql}", RuntimeWarning, stacklevel=2)


class AsyncSelectMixin(AwaitableQuery):
    """Select-only coroutines. ``await q`` gives a list of rows."""

    async def _aresult(self) -> list[Any]:
        wrapper = await self.aexecute()
        return wrapper.row_cache  # type: ignore[no-any-return]

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Any]:
        self._apeewee_used = True
        db = resolve_database(self, None)
        for rows in await iterate_query(db, self):
            for row in rows:
                yield row

    async def aget(self, database: Any = None) -> Any:
        """The first row; ``Model.DoesNotExist`` (model queries) or None when there is none."""
        clone = self.paginate(1, 1)  # type: ignore[attr-defined]
        rows = (await clone.aexecute(database)).row_cache
        if rows:
            return rows[0]
        model = getattr(self, "model", None)
        if model is None:
            return None
        sql, params = clone.sql()
        raise model.DoesNotExist(
            f"{model} instance matching query does not exist:\nSQL: {sql}\nParams: {params}")

    async def aget_or_none(self, database: Any = None) -> Any:
        """The first row, or None."""
        try:
            return await self.aget(database)
        except peewee.DoesNotExist:
            return None

    async def afirst(self, n: int = 1, database: Any = None) -> Any:
        """The first row (or the first ``n`` rows as a list); None when there are none."""
        rows = (await self.limit(n).aexecute(database)).row_cache  # type: ignore[attr-defined]
        if rows:
            return rows[0] if n == 1 else rows
        return None

    async def ascalar(self, as_tuple: bool = False, as_dict: bool = False,
                      database: Any = None) -> Any:
        """The first column of the first row (the whole row with ``as_tuple``/``as_dict``)."""
        if as_dict:
            return await self.dicts().afirst(database=database)  # type: ignore[attr-defined]
        row = await self.tuples().afirst(database=database)  # type: ignore[attr-defined]
        return row[0] if row and not as_tuple else row

    async def acount(self, clear_limit: bool = False, database: Any = None) -> int:
        """The number of rows this query returns, as peewee's ``count()``.

        peewee wraps the query: ``SELECT COUNT(1) FROM (...) AS _wrapped``. When that
        cannot change the answer (no GROUP BY, HAVING, DISTINCT, LIMIT/OFFSET, window or
        row lock), apeewee asks ``SELECT COUNT(*) FROM ... WHERE ...`` instead, which
        databases answer faster (SQLite's whole-table count uses its fast path).
        """
        self._apeewee_used = True
        db = resolve_database(self, database)
        if _plain_count(self, clear_limit):
            query = self.order_by().select(peewee.fn.COUNT(peewee.SQL("*"))).tuples()  # type: ignore[attr-defined]
            if clear_limit:
                query._limit = query._offset = None
            rows = (await query.aexecute(db)).row_cache
            return int(rows[0][0]) if rows else 0
        return int(await db._replay(self.count, db, clear_limit=clear_limit))  # type: ignore[attr-defined]

    async def aexists(self, database: Any = None) -> bool:
        """Whether the query matches any row, as peewee's ``exists()``."""
        self._apeewee_used = True
        db = resolve_database(self, database)
        return bool(await db._replay(self.exists, db))  # type: ignore[attr-defined]


def _plain_count(query: Any, clear_limit: bool) -> bool:
    """Whether COUNT(*) over the query's own FROM/WHERE equals counting its rows."""
    return (
        isinstance(query, peewee.Select)
        and not query._group_by
        and query._having is None
        and query._distinct is None
        and not query._simple_distinct
        and not query._windows
        and not query._for_update
        and (clear_limit or (query._limit is None and query._offset is None))
    )


class _AsyncCompounds:
    """UNION / INTERSECT / EXCEPT (and ``+ | & -``) that build awaitable compound queries."""

    model: Any

    def _compound(self, op: str, rhs: Any) -> AsyncModelCompoundSelectQuery:
        return AsyncModelCompoundSelectQuery(self.model, self, op, rhs)

    def union_all(self, rhs: Any) -> AsyncModelCompoundSelectQuery:
        return self._compound("UNION ALL", rhs)

    def union(self, rhs: Any) -> AsyncModelCompoundSelectQuery:
        return self._compound("UNION", rhs)

    def intersect(self, rhs: Any) -> AsyncModelCompoundSelectQuery:
        return self._compound("INTERSECT", rhs)

    def except_(self, rhs: Any) -> AsyncModelCompoundSelectQuery:
        return self._compound("EXCEPT", rhs)

    __add__ = union_all
    __or__ = union
    __and__ = intersect
    __sub__ = except_


class AsyncModelSelect(_AsyncCompounds, AsyncSelectMixin, peewee.ModelSelect):
    """``Model.aselect()``: a peewee ``ModelSelect`` that can be awaited."""


class AsyncModelCompoundSelectQuery(_AsyncCompounds, AsyncSelectMixin,
                                    peewee.ModelCompoundSelectQuery):
    """A UNION / INTERSECT / EXCEPT of model selects that can be awaited."""


class AsyncModelRaw(AsyncSelectMixin, peewee.ModelRaw):
    """``Model.araw(sql, *params)``: raw SQL whose rows become model instances."""


class AsyncModelInsert(AwaitableQuery, peewee.ModelInsert):
    """``Model.ainsert(...)``: awaiting gives the new primary key (rows with ``returning``)."""

    async def _aresult(self) -> Any:
        result = await self.aexecute()
        return _rows_if_cursor(result)


class AsyncModelUpdate(AwaitableQuery, peewee.ModelUpdate):
    """``Model.aupdate(...)``: awaiting gives the number of rows changed."""

    async def _aresult(self) -> Any:
        return _rows_if_cursor(await self.aexecute())


class AsyncModelDelete(AwaitableQuery, peewee.ModelDelete):
    """``Model.adelete()``: awaiting gives the number of rows deleted."""

    async def _aresult(self) -> Any:
        return _rows_if_cursor(await self.aexecute())


def _rows_if_cursor(result: Any) -> Any:
    # With .returning(...) peewee returns a cursor wrapper; awaiting gives its rows.
    if isinstance(result, peewee.CursorWrapper):
        result.fill_cache()
        return result.row_cache
    return result

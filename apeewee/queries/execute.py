"""Execute any peewee query on an apeewee database and build results with peewee's wrappers."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import peewee

from .. import _peewee
from .replay import replay
from .rows import chunks, populate

__all__ = ["execute_query", "iterate_query"]


def _fresh_execute(query: Any, db: Any) -> Any:
    return _peewee.execute_sync(query.clone(), db)


async def execute_query(db: Any, query: Any, timeout: float | None = None) -> Any:
    """Run ``query`` on ``db``; return what peewee's ``execute()`` returns for it.

    Selects and raw queries give a filled cursor wrapper; inserts the new primary key
    (or rows with ``returning``); updates and deletes the row count.
    """
    run_sql = db._run_sql if timeout is None else functools.partial(db._run_sql, timeout=timeout)
    if isinstance(query, (peewee.SelectBase, peewee.RawQuery)):
        if _peewee.load_tree(query):
            # with_related() issues more queries; let peewee drive them via replay.
            # A fresh clone each pass: peewee loads relations only on a query's first run.
            return await replay(db, run_sql, _fresh_execute, query, db)
        sql, params, plans = db._compile(query)
        result = await run_sql(sql, params)
        wrapper = _peewee.cursor_wrapper(query, result)
        populate(wrapper, result, plans)
        return wrapper
    return await replay(db, run_sql, _peewee.execute_sync, query, db)


async def iterate_query(db: Any, query: Any) -> Iterator[list[Any]]:
    """Run a select on ``db``; its rows come built in chunks, as they are iterated."""
    if _peewee.load_tree(query):
        return iter([(await execute_query(db, query)).row_cache])
    sql, params, plans = db._compile(query)
    result = await db._run_sql(sql, params)
    return chunks(_peewee.cursor_wrapper(query, result), result, plans)

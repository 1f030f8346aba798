"""The one place that touches peewee's private API; each use is pinned by a test."""

from __future__ import annotations

from typing import Any

import peewee

__all__ = ["cursor_wrapper", "execute_sync", "load_tree", "normalize_data"]


def cursor_wrapper(query: Any, cursor: Any) -> peewee.CursorWrapper:
    """peewee's row builder for ``query`` (models, dicts, tuples, joins) over ``cursor``."""
    return query._get_cursor_wrapper(cursor)


def execute_sync(query: Any, database: Any) -> Any:
    """peewee's own per-query-type execution logic (returning, last insert id, rowcount)."""
    return query._execute(database)


def load_tree(query: Any) -> Any:
    """The ``with_related()`` load tree of a model select, if any."""
    return getattr(query, "_load_tree", None)


def normalize_data(model: Any, data: Any, kwargs: dict[str, Any]) -> Any:
    """peewee's merge of positional and keyword row data for insert()/update()."""
    return model._normalize_data(data, kwargs)

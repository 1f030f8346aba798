"""Which database a query runs on, decided at execution time for the current task.

Order: pinned connection > transaction > task binding > the query's (model's) database.
A pinned connection and a transaction are per database and live in the database's task
scope (``scope.py``); this module resolves the database itself.
"""

from __future__ import annotations

from typing import Any

import peewee

__all__ = ["resolve", "resolve_database"]


def resolve_database(query: Any, database: Any = None) -> Any:
    """The concrete database for ``query``: ``database`` if given, else the query's own."""
    return resolve(query._database if database is None else database, type(query).__name__)


def resolve(db: Any, what: str = "the query") -> Any:
    """Unwrap ``peewee.DatabaseProxy`` layers and check the result is an apeewee database."""
    while isinstance(db, peewee.Proxy):
        db = db.obj
    if db is None:
        raise peewee.InterfaceError(
            f"{what} is not bound to a database: give its model a Meta.database, "
            "initialize its DatabaseProxy, or pass `database=`")
    if not hasattr(db, "_run_sql"):
        raise peewee.InterfaceError(
            f"{type(db).__name__} is not an apeewee database; the async API needs "
            "apeewee.SqliteDatabase, PostgresqlDatabase or MySQLDatabase")
    return db

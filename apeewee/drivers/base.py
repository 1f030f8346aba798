"""The driver adapter interface and the mapping of driver exceptions to peewee's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import peewee

__all__ = ["DBAPI_ERRORS", "Driver", "DriverConnection", "Result", "map_dbapi_error"]


class Result:
    """A fully fetched statement result, shaped like the DB-API cursor peewee's wrappers read."""

    __slots__ = ("_pos", "description", "lastrowid", "rowcount", "rows")

    def __init__(
        self,
        rows: Sequence[Any],
        description: Sequence[tuple[Any, ...]] | None,
        rowcount: int = -1,
        lastrowid: int | None = None,
    ) -> None:
        self.rows = rows
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self._pos = 0

    def fetchone(self) -> Any:
        if self._pos >= len(self.rows):
            return None
        row = self.rows[self._pos]
        self._pos += 1
        return row

    def fetchall(self) -> list[Any]:
        rows = list(self.rows[self._pos :])
        self._pos = len(self.rows)
        return rows

    def fetchmany(self, size: int = 1) -> list[Any]:
        rows = list(self.rows[self._pos : self._pos + size])
        self._pos += len(rows)
        return rows

    def __iter__(self) -> Any:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        """Nothing to release: the rows were fetched when the statement ran."""


class DriverConnection(Protocol):
    """One open driver connection. Only its pool and its pinned task use it."""

    async def execute(self, sql: str, params: Sequence[Any] | None) -> Result:
        """Run one statement and fetch its whole result; raise peewee exceptions."""

    async def begin(self, isolation_level: str | None = None, lock_type: str | None = None) -> None:
        """Start a transaction."""

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    def in_transaction(self) -> bool:
        """True when the server holds an open transaction for this connection."""

    def is_usable(self) -> bool:
        """Cheap local check: False once the driver knows the connection is closed or broken."""

    async def close(self) -> None:
        """Close politely (the server is told)."""

    def terminate(self) -> None:
        """Close at once without awaiting; safe from any state, also when the loop is gone."""


class Driver(Protocol):
    """Opens connections for one database configuration."""

    name: str

    async def connect(self) -> DriverConnection: ...


# DB-API 2 exception names (sqlite3, pymysql) -> peewee classes; most specific first.
DBAPI_ERRORS: tuple[tuple[str, type[peewee.PeeweeException]], ...] = (
    ("IntegrityError", peewee.IntegrityError),
    ("DataError", peewee.DataError),
    ("ProgrammingError", peewee.ProgrammingError),
    ("NotSupportedError", peewee.NotSupportedError),
    ("InternalError", peewee.InternalError),
    ("OperationalError", peewee.OperationalError),
    ("InterfaceError", peewee.InterfaceError),
    ("DatabaseError", peewee.DatabaseError),
)


def map_dbapi_error(exc: BaseException) -> peewee.PeeweeException | None:
    """Return the peewee exception for a DB-API driver exception, or None if not one."""
    if isinstance(exc, peewee.PeeweeException):
        return None
    names = {cls.__name__ for cls in type(exc).__mro__}
    for name, target in DBAPI_ERRORS:
        if name in names:
            new = target(*exc.args)
            return new
    if isinstance(exc, OSError):
        return peewee.OperationalError(str(exc) or type(exc).__name__)
    return None

"""The driver adapter interface and the mapping of driver exceptions to peewee's."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Protocol

import peewee

__all__ = [
    "DBAPI_ERRORS", "Driver", "DriverConnection", "Result", "enable_keepalive", "is_transient",
    "map_dbapi_error",
]


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

    async def ping(self) -> None:
        """A round trip to the server; raises if the connection is dead."""

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


# SQLSTATEs (PostgreSQL) and error numbers (MySQL) of conflicts worth re-running.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_RETRY_MYSQL_CODES = frozenset({1213, 1205})  # deadlock, lock wait timeout


def is_transient(exc: BaseException) -> bool:
    """True for a serialization failure, deadlock or lock timeout: the transaction may
    succeed if run again. Looks at the driver's exception chained as ``__cause__``."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if getattr(cause, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    module = type(cause).__module__
    if module.startswith("pymysql") and cause.args and cause.args[0] in _RETRY_MYSQL_CODES:
        return True
    # SQLite: a busy database (another writer holds the lock) is its deadlock/timeout.
    return module == "sqlite3" and ("database is locked" in str(cause)
                                    or "database table is locked" in str(cause))


# TCP keepalive: a peer that vanished (no FIN, no RST) is found in about 30 s, and
# unacknowledged writes give up after 30 s, instead of the kernel's hours.
KEEPALIVE_OPTIONS = (
    ("TCP_KEEPIDLE", 15),
    ("TCP_KEEPINTVL", 5),
    ("TCP_KEEPCNT", 3),
    ("TCP_USER_TIMEOUT", 30_000),
)


def enable_keepalive(transport: Any) -> None:
    """Turn on short TCP keepalive probes on a connection's socket (TCP only)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE_OPTIONS:
        option = getattr(socket, name, None)
        if option is not None:  # Linux has all four; others fewer
            sock.setsockopt(socket.IPPROTO_TCP, option, value)

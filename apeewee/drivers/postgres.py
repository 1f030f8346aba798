"""asyncpg adapter: prepared statements cached per connection, numbered placeholders."""

from __future__ import annotations

import functools
import inspect
import itertools
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import peewee

from ..errors import StaleConnection
from .base import Result, enable_keepalive

try:
    import asyncpg
    import asyncpg.exceptions as pgexc
except ImportError:  # pragma: no cover - exercised only without the extra
    asyncpg = None

__all__ = ["PostgresDriver", "to_numbered_placeholders"]

ISOLATION_LEVELS = frozenset(
    {"read uncommitted", "read committed", "repeatable read", "serializable"}
)

# SQLSTATE class -> peewee exception, following psycopg's classification.
_SQLSTATE_CLASSES: dict[str, type[peewee.PeeweeException]] = {
    "08": peewee.OperationalError,
    "0A": peewee.NotSupportedError,
    "21": peewee.ProgrammingError,
    "22": peewee.DataError,
    "23": peewee.IntegrityError,
    "24": peewee.InternalError,
    "25": peewee.InternalError,
    "26": peewee.InternalError,
    "27": peewee.OperationalError,
    "28": peewee.OperationalError,
    "2B": peewee.InternalError,
    "2D": peewee.InternalError,
    "2F": peewee.InternalError,
    "34": peewee.OperationalError,
    "38": peewee.InternalError,
    "39": peewee.InternalError,
    "3B": peewee.InternalError,
    "3D": peewee.ProgrammingError,
    "3F": peewee.ProgrammingError,
    "40": peewee.OperationalError,
    "42": peewee.ProgrammingError,
    "44": peewee.ProgrammingError,
    "53": peewee.OperationalError,
    "54": peewee.OperationalError,
    "55": peewee.OperationalError,
    "57": peewee.OperationalError,
    "58": peewee.OperationalError,
    "F0": peewee.InternalError,
    "HV": peewee.OperationalError,
    "P0": peewee.InternalError,
    "XX": peewee.InternalError,
}

_PLACEHOLDER = re.compile(r"%%|%s")
_statement_ids = itertools.count(1)


@functools.lru_cache(maxsize=4096)
def to_numbered_placeholders(sql: str) -> str:
    """Rewrite psycopg-style ``%s`` placeholders as ``$1, $2, ...``; ``%%`` becomes ``%``.

    peewee emits ``%s`` for PostgreSQL; asyncpg wants numbered parameters. As in
    psycopg, ``%s`` is a placeholder wherever it appears and ``%%`` a literal percent.
    """
    if "%" not in sql:
        return sql
    counter = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal counter
        if match.group(0) == "%%":
            return "%"
        counter += 1
        return f"${counter}"

    return _PLACEHOLDER.sub(replace, sql)


def map_error(exc: BaseException) -> peewee.PeeweeException | None:
    """The peewee exception for an asyncpg (or socket) exception, or None."""
    if isinstance(exc, peewee.PeeweeException):
        return None
    message = str(exc) or type(exc).__name__
    if asyncpg is not None:
        if isinstance(exc, asyncpg.PostgresError):
            sqlstate = getattr(exc, "sqlstate", None) or ""
            target = _SQLSTATE_CLASSES.get(sqlstate[:2], peewee.DatabaseError)
            return target(message)
        if isinstance(exc, pgexc.DataError):  # client-side: bad argument for a parameter
            return peewee.DataError(message)
        if isinstance(exc, pgexc.InternalClientError):  # e.g. a result shape that changed
            return peewee.InterfaceError(message)
        if isinstance(exc, pgexc.ConnectionDoesNotExistError):
            return peewee.OperationalError(message)
        if isinstance(exc, pgexc.InterfaceError):
            return peewee.InterfaceError(message)
    if isinstance(exc, (OSError, TimeoutError)):
        return peewee.OperationalError(message)
    return None


def _status_rowcount(status: str | None) -> int:
    # Command tags look like "UPDATE 3", "INSERT 0 1", "SELECT 5"; DDL has no count.
    if status:
        tail = status.rsplit(" ", 1)[-1]
        if tail.isdigit():
            return int(tail)
    return -1


class PostgresConnection:
    """One asyncpg connection with an LRU cache of prepared statements."""

    __slots__ = ("_cache_size", "_closed", "_stmts", "raw")

    def __init__(self, raw: Any, cache_size: int) -> None:
        self.raw = raw
        # peewee's SQL -> (prepared statement, result description)
        self._stmts: OrderedDict[str, tuple[Any, list[tuple[str]]]] = OrderedDict()
        self._cache_size = cache_size
        self._closed = False

    async def _statement(self, sql: str) -> tuple[Any, list[tuple[str]]]:
        """The prepared statement for ``sql`` and its result description."""
        stmts = self._stmts
        entry = stmts.get(sql)
        if entry is not None:
            stmts.move_to_end(sql)
            return entry  # type: ignore[no-any-return]
        if self._cache_size > 0:
            # Named, so the server keeps the plan: asyncpg makes unnamed statements
            # (re-parsed on every run) when its own cache is off, as it is here.
            stmt = await self.raw.prepare(to_numbered_placeholders(sql),
                                          name=f"__apeewee_{next(_statement_ids)}")
            entry = stmts[sql] = (stmt, [(attr.name,) for attr in stmt.get_attributes()])
            if len(stmts) > self._cache_size:
                stmts.popitem(last=False)
        else:  # pgbouncer in transaction mode: nothing may outlive the statement
            stmt = await self.raw.prepare(to_numbered_placeholders(sql))
            entry = (stmt, [(attr.name,) for attr in stmt.get_attributes()])
        return entry

    async def execute(self, sql: str, params: Sequence[Any] | None) -> Result:
        if self.raw.is_closed():
            raise StaleConnection("the PostgreSQL connection was closed before the "
                                  "statement was sent; nothing of it ran")
        args = params or ()
        try:
            try:
                stmt, description = await self._statement(sql)
                rows = await stmt.fetch(*args)
            except (pgexc.InvalidCachedStatementError, pgexc.OutdatedSchemaCacheError):
                # The schema changed under a cached statement. Outside a transaction
                # nothing ran, so prepare afresh and run once more.
                self._stmts.pop(sql, None)
                if self.raw.is_in_transaction():
                    raise
                stmt, description = await self._statement(sql)
                rows = await stmt.fetch(*args)
        except pgexc.InternalClientError as exc:
            raise self._broken(exc) from exc
        except Exception as exc:
            if "cached plan must not change result type" in str(exc):
                self._stmts.pop(sql, None)
            mapped = map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return Result(rows, description, _status_rowcount(stmt.get_statusmsg()))

    def _broken(self, exc: BaseException) -> peewee.PeeweeException:
        """asyncpg refuses to start a statement on a connection the server has just
        closed (a FATAL message arrived, the EOF not yet): nothing was sent."""
        if str(exc).startswith("cannot switch to state"):
            self.terminate()
            return StaleConnection(f"the PostgreSQL connection is broken ({exc}); nothing "
                                   "of the statement was sent")
        return map_error(exc) or peewee.InterfaceError(str(exc))

    async def _simple(self, sql: str) -> None:
        if self.raw.is_closed():
            raise StaleConnection("the PostgreSQL connection was closed before the "
                                  "statement was sent; nothing of it ran")
        try:
            await self.raw.execute(sql)
        except pgexc.InternalClientError as exc:
            raise self._broken(exc) from exc
        except Exception as exc:
            mapped = map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def begin(self, isolation_level: str | None = None, lock_type: str | None = None) -> None:
        if isolation_level is None:
            await self._simple("BEGIN")
        else:
            await self._simple(f"BEGIN ISOLATION LEVEL {check_isolation_level(isolation_level)}")

    async def commit(self) -> None:
        await self._simple("COMMIT")

    async def rollback(self) -> None:
        await self._simple("ROLLBACK")

    async def ping(self) -> None:
        await self._simple("SELECT 1")

    def in_transaction(self) -> bool:
        return bool(self.raw.is_in_transaction())

    def is_usable(self) -> bool:
        return not self._closed and not self.raw.is_closed()

    async def close(self) -> None:
        self._closed = True
        self._stmts.clear()
        await self.raw.close(timeout=5)

    def terminate(self) -> None:
        self._closed = True
        self._stmts.clear()
        try:
            self.raw.terminate()
        except RuntimeError:  # the connection's loop is already closed
            pass


def check_isolation_level(level: str) -> str:
    """Validate an isolation level name and return it in SQL spelling."""
    normalized = " ".join(str(level).replace("_", " ").lower().split())
    if normalized not in ISOLATION_LEVELS:
        raise ValueError(
            f"unknown isolation level {level!r}; use one of: "
            + ", ".join(sorted(ISOLATION_LEVELS))
        )
    return normalized.upper()


def _asyncpg_connect_options() -> frozenset[str]:
    if asyncpg is None:
        return frozenset()
    return frozenset(inspect.signature(asyncpg.connect).parameters) - {"dsn", "loop"}


class PostgresDriver:
    """Opens asyncpg connections from peewee-style connection parameters."""

    name = "postgres"

    def __init__(
        self,
        database: str,
        params: dict[str, Any],
        *,
        connect_timeout: float | None = 10.0,
        statement_cache_size: int = 256,
        isolation_level: str | None = None,
    ) -> None:
        if asyncpg is None:
            raise ImportError("apeewee.PostgresqlDatabase needs asyncpg: pip install apeewee[postgres]")
        options = dict(params)
        if "passwd" in options:
            options["password"] = options.pop("passwd")
        if "dbname" in options:
            options["database"] = options.pop("dbname")
        options.setdefault("database", database)
        unknown = set(options) - _asyncpg_connect_options()
        if unknown:
            raise TypeError(
                "unknown PostgreSQL connection option(s) "
                + ", ".join(sorted(unknown))
                + "; asyncpg.connect() accepts: "
                + ", ".join(sorted(_asyncpg_connect_options()))
            )
        if isolation_level is not None:
            settings = dict(options.get("server_settings") or {})
            settings["default_transaction_isolation"] = check_isolation_level(isolation_level).lower()
            options["server_settings"] = settings
        # Our own statement cache replaces asyncpg's (which `prepare` does not use).
        options["statement_cache_size"] = 0
        if connect_timeout is not None:
            options["timeout"] = connect_timeout
        self._options = options
        self._cache_size = statement_cache_size

    async def connect(self) -> PostgresConnection:
        try:
            raw = await asyncpg.connect(**self._options)
        except Exception as exc:
            mapped = map_error(exc) or peewee.OperationalError(str(exc))
            raise mapped from exc
        # asyncpg 0.29-0.32 keeps its transport in a private attribute; keepalive is a
        # socket option, so this is where it can be set.
        enable_keepalive(getattr(raw, "_transport", None))
        return PostgresConnection(raw, self._cache_size)

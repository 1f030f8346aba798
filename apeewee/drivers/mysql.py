"""aiomysql adapter: autocommit on, so a write outside a transaction is durable when it returns."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import peewee

from ..errors import StaleConnection
from .base import Result, enable_keepalive, map_dbapi_error
from .postgres import check_isolation_level

try:
    import aiomysql
except ImportError:  # pragma: no cover - exercised only without the extra
    aiomysql = None

if aiomysql is not None:

    class _QuietCursor(aiomysql.Cursor):  # type: ignore[misc]
        """aiomysql's cursor without its SHOW WARNINGS round trip.

        aiomysql 0.3 runs SHOW WARNINGS after any statement with server notes (an
        ``INSERT IGNORE`` duplicate, ``DROP TABLE IF EXISTS`` of a missing table) and
        re-emits them as Python warnings: an extra round trip per such statement, and
        noise peewee over pymysql never produced. Server errors still raise.
        """

        async def _show_warnings(self, conn: Any) -> None:
            return None

__all__ = ["MySQLDriver"]

T = TypeVar("T")


def map_error(exc: BaseException) -> peewee.PeeweeException | None:
    """The peewee exception for a pymysql/aiomysql (or socket) exception, or None."""
    return map_dbapi_error(exc)


logger = logging.getLogger("apeewee")
_kill_tasks: set[asyncio.Task[Any]] = set()


class MySQLConnection:
    """One aiomysql connection."""

    __slots__ = ("_closed", "_driver", "raw")

    def __init__(self, raw: Any, driver: MySQLDriver) -> None:
        self.raw = raw
        self._driver = driver
        self._closed = False

    async def execute(self, sql: str, params: Sequence[Any] | None) -> Result:
        return await self._guarded(self._query, sql, params)

    async def _query(self, sql: str, params: Sequence[Any] | None) -> Result:
        cursor = await self.raw.cursor(_QuietCursor)
        try:
            # pymysql interpolates only when args is not None; peewee passes ()
            # too, so that "%%" means "%" with or without parameters.
            await cursor.execute(sql, params or ())
            rows = await cursor.fetchall()
            return Result(rows or (), cursor.description, cursor.rowcount, cursor.lastrowid)
        finally:
            await cursor.close()

    async def _guarded(self, action: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``action`` on this connection: refuse a closed one, kill the statement on
        the server when cancelled, and map driver errors to peewee's."""
        if not self.is_usable():
            raise StaleConnection("the MySQL connection was closed before the statement "
                                  "was sent; nothing of it ran")
        try:
            return await action(*args)
        except asyncio.CancelledError:
            # aiomysql just drops the socket; the server would run the statement (and
            # hold its locks) until it notices. Kill it from a side connection.
            self._kill_on_server()
            raise
        except Exception as exc:
            mapped = map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def begin(self, isolation_level: str | None = None, lock_type: str | None = None) -> None:
        if isolation_level is not None:
            level = check_isolation_level(isolation_level)
            await self.execute(f"SET TRANSACTION ISOLATION LEVEL {level}", None)
        # aiomysql's own begin/commit/rollback: one packet each way, no cursor or result
        await self._guarded(self.raw.begin)

    async def commit(self) -> None:
        await self._guarded(self.raw.commit)

    async def rollback(self) -> None:
        await self._guarded(self.raw.rollback)

    def _kill_on_server(self) -> None:
        self._closed = True
        try:
            thread_id = self.raw.thread_id()
        except Exception:
            return
        task = asyncio.get_running_loop().create_task(self._driver.kill(thread_id))
        _kill_tasks.add(task)
        task.add_done_callback(_kill_tasks.discard)

    async def ping(self) -> None:
        try:
            await self.raw.ping(reconnect=False)
        except Exception as exc:
            mapped = map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def in_transaction(self) -> bool:
        return bool(self.raw.get_transaction_status())

    def is_usable(self) -> bool:
        if self._closed or self.raw.closed:
            return False
        # aiomysql 0.3 never reads an idle socket, so it does not notice the server
        # closing it (KILL, restart, idle cut); its private reader has seen the EOF.
        # A reset (RST) leaves an exception on the reader instead of an EOF.
        reader = getattr(self.raw, "_reader", None)
        return not (reader is not None and (reader.at_eof() or reader.exception() is not None))

    async def close(self) -> None:
        self._closed = True
        try:
            await self.raw.ensure_closed()
        except Exception:
            self.raw.close()

    def terminate(self) -> None:
        self._closed = True
        try:
            self.raw.close()
        except RuntimeError:  # the connection's loop is already closed
            pass


def _aiomysql_connect_options() -> frozenset[str]:
    if aiomysql is None:
        return frozenset()
    return frozenset(inspect.signature(aiomysql.connect).parameters) - {"loop"}


class MySQLDriver:
    """Opens aiomysql connections from peewee-style connection parameters."""

    name = "mysql"

    def __init__(
        self,
        database: str,
        params: dict[str, Any],
        *,
        connect_timeout: float | None = 10.0,
        isolation_level: str | None = None,
    ) -> None:
        if aiomysql is None:
            raise ImportError("apeewee.MySQLDatabase needs aiomysql: pip install apeewee[mysql]")
        options = dict(params)
        if "passwd" in options:
            options["password"] = options.pop("passwd")
        if "database" in options:
            options["db"] = options.pop("database")
        options.setdefault("db", database)
        options.setdefault("charset", "utf8mb4")
        unknown = set(options) - _aiomysql_connect_options()
        if unknown:
            raise TypeError(
                "unknown MySQL connection option(s) "
                + ", ".join(sorted(unknown))
                + "; aiomysql.connect() accepts: "
                + ", ".join(sorted(_aiomysql_connect_options()))
            )
        # aiomysql opens connections with autocommit off: a write outside an explicit
        # transaction would sit uncommitted and be lost when the connection closes.
        options["autocommit"] = True
        if connect_timeout is not None:
            options["connect_timeout"] = connect_timeout
        self._connect_timeout = connect_timeout
        if isolation_level is not None:
            level = check_isolation_level(isolation_level)
            init = options.get("init_command")
            stmt = f"SET SESSION TRANSACTION ISOLATION LEVEL {level}"
            options["init_command"] = f"{init}; {stmt}" if init else stmt
        self._options = options

    async def connect(self) -> MySQLConnection:
        try:
            # aiomysql's connect_timeout covers the TCP connect only, not the server's
            # handshake: a server that accepts and stays silent would hang us forever.
            async with asyncio.timeout(self._connect_timeout):
                raw = await aiomysql.connect(**self._options)
        except TimeoutError as exc:
            raise peewee.OperationalError(
                f"couldn't connect to MySQL within connect_timeout={self._connect_timeout} s"
            ) from exc
        except Exception as exc:
            mapped = map_error(exc) or peewee.OperationalError(str(exc))
            raise mapped from exc
        # aiomysql 0.3 keeps its StreamWriter private; keepalive is a socket option.
        enable_keepalive(getattr(raw, "_writer", None))
        return MySQLConnection(raw, self)

    async def kill(self, thread_id: int) -> None:
        """Kill a server thread (and its running statement) from a short-lived connection."""
        try:
            side = await aiomysql.connect(**self._options)
            try:
                async with side.cursor() as cursor:
                    await cursor.execute(f"KILL {int(thread_id)}")
            finally:
                side.close()
        except Exception as exc:  # the thread may be gone already
            logger.debug("KILL %s failed: %r", thread_id, exc)

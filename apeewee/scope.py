"""Per-task connection state: which pooled connection a task has pinned, and its transactions.

The state lives in a context variable but is keyed by task: ``asyncio.create_task`` copies
context variables, so a child task sees its parent's state object and must ignore it. A
state is valid only in the task that created it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar

import peewee

from .drivers.base import Result

if TYPE_CHECKING:
    from .databases.base import AsyncDatabase
    from .pool import Pool, PooledConnection
    from .transactions import Savepoint, Transaction

__all__ = ["Connection", "ConnectionContext", "TaskScope"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class TaskScope:
    """One task's pinned connection for one database, with its open transactions."""

    __slots__ = ("depth", "discard", "entry", "explicit", "pool", "task", "transactions")

    def __init__(self, task: asyncio.Task[Any] | None, entry: PooledConnection, pool: Pool) -> None:
        self.task = task
        self.entry: PooledConnection | None = entry
        self.pool = pool
        self.depth = 1
        self.transactions: list[Transaction | Savepoint] = []
        self.discard: str | None = None  # set when the connection must not be reused
        self.explicit: Any = False  # the token of an aconnect() pin, if any


def current_scope(var: ContextVar[TaskScope | None]) -> TaskScope | None:
    """The calling task's live scope in ``var``, ignoring one inherited from a parent task."""
    scope = var.get()
    if scope is None or scope.entry is None:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return None
    return scope if scope.task is task else None


class Connection:
    """The connection pinned by ``async with db.connection() as conn``; invalid after the block."""

    __slots__ = ("_db", "_scope")

    def __init__(self, db: AsyncDatabase, scope: TaskScope) -> None:
        self._db = db
        self._scope = scope

    def _entry(self) -> PooledConnection:
        entry = self._scope.entry
        if entry is None:
            raise peewee.InterfaceError("this connection was returned to the pool; "
                                        "use it only inside its `async with db.connection()` block")
        return entry

    @property
    def raw(self) -> Any:
        """The driver's own connection object (aiosqlite, asyncpg or aiomysql)."""
        return self._entry().conn.raw  # type: ignore[attr-defined]

    async def aexecute_sql(self, sql: str, params: Sequence[Any] | None = None) -> Result:
        """Run SQL (in peewee's placeholder style) on this connection."""
        return await self._db._execute_on(self._entry(), sql, params)

    def in_transaction(self) -> bool:
        return bool(self._scope.transactions)

    def __repr__(self) -> str:
        state = "released" if self._scope.entry is None else "pinned"
        return f"<apeewee.Connection {state} to {self._db.database!r}>"


class ConnectionContext:
    """``async with db.connection():`` pins one pooled connection to the current task.

    Reentrant: nested blocks reuse the connection and only the outermost exit returns it,
    also on error and on cancellation. Also a decorator of async functions.
    """

    __slots__ = ("_db", "_tokens")

    def __init__(self, db: AsyncDatabase) -> None:
        self._db = db
        # Keyed by task: one context object may be entered by several tasks at once.
        self._tokens: dict[Any, list[tuple[TaskScope, Token[TaskScope | None] | None]]] = {}

    async def __aenter__(self) -> Connection:
        scope, token = await self._db._pin()
        self._tokens.setdefault(asyncio.current_task(), []).append((scope, token))
        return Connection(self._db, scope)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        task = asyncio.current_task()
        stack = self._tokens[task]
        scope, token = stack.pop()
        if not stack:
            del self._tokens[task]
        await self._db._unpin(scope, token)

    def __enter__(self) -> None:
        from .errors import SyncQueryError

        raise SyncQueryError("`with db.connection()` would block; use `async with db.connection():`")

    def __exit__(self, *exc: Any) -> None:  # pragma: no cover - __enter__ always raises
        return None

    def __call__(self, fn: F) -> F:
        if not asyncio.iscoroutinefunction(fn):
            raise TypeError("connection_context() decorates async functions only")

        @functools.wraps(fn)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            async with ConnectionContext(self._db):
                return await fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

"""Transactions and savepoints as async context managers, with peewee's nesting rules.

``atomic()`` opens a transaction at depth 0 and a savepoint inside one; ``transaction()``
nested in another joins it (only the outermost commits); ``savepoint()`` needs an open
transaction. Each block pins its connection to the task for its whole life.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import TYPE_CHECKING, Any, TypeVar

import peewee

from .drivers.base import is_transient
from .errors import SyncQueryError
from .scope import TaskScope

if TYPE_CHECKING:
    from .databases.base import AsyncDatabase

__all__ = ["Atomic", "Savepoint", "Transaction"]

logger = logging.getLogger("apeewee")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class _AsyncBlock:
    """Shared plumbing: sync use is refused; instances decorate async functions."""

    db: AsyncDatabase

    def _fresh(self) -> _AsyncBlock:
        raise NotImplementedError

    def __enter__(self) -> None:
        name = type(self).__name__.lower()
        raise SyncQueryError(f"`with db.{name}()` would block the event loop; "
                             f"use `async with db.{name}():`")

    def __exit__(self, *exc: Any) -> None:  # pragma: no cover - __enter__ always raises
        return None

    def __call__(self, fn: F) -> F:
        if not asyncio.iscoroutinefunction(fn):
            raise TypeError(f"{type(self).__name__.lower()}() decorates async functions only")

        @functools.wraps(fn)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            async with self._fresh():  # type: ignore[attr-defined]
                return await fn(*args, **kwargs)

        return inner  # type: ignore[return-value]


class Transaction(_AsyncBlock):
    """A database transaction: BEGIN on entry, COMMIT on success, ROLLBACK on error."""

    def __init__(self, db: AsyncDatabase, isolation_level: str | None = None,
                 lock_type: str | None = None) -> None:
        self.db = db
        self.isolation_level = isolation_level
        self.lock_type = lock_type
        self._scope: TaskScope | None = None
        self._token: Token[TaskScope | None] | None = None
        self._outermost = False

    def _fresh(self) -> Transaction:
        return Transaction(self.db, self.isolation_level, self.lock_type)

    def _conn_scope(self) -> TaskScope:
        scope = self._scope
        if scope is None or scope.entry is None:
            raise peewee.InterfaceError("this transaction is not active; "
                                        "use it inside its `async with` block")
        return scope

    async def _begin(self) -> None:
        scope = self._conn_scope()
        await self.db._begin_on(scope.entry, self.isolation_level, self.lock_type)  # type: ignore[arg-type]

    async def acommit(self, begin: bool = True) -> None:
        """Commit now; with ``begin`` (the default) a new transaction starts at once."""
        scope = self._conn_scope()
        await scope.entry.conn.commit()  # type: ignore[union-attr]
        if begin:
            await self._begin()

    async def arollback(self, begin: bool = True) -> None:
        """Roll back now; with ``begin`` (the default) a new transaction starts at once."""
        scope = self._conn_scope()
        await scope.entry.conn.rollback()  # type: ignore[union-attr]
        if begin:
            await self._begin()

    async def __aenter__(self) -> Transaction:
        scope, token = await self.db._pin()
        self._scope, self._token = scope, token
        self._outermost = not scope.transactions
        if self._outermost:
            try:
                await self._begin()
            except BaseException:
                await self.db._unpin(scope, token, discard="begin failed")
                raise
        scope.transactions.append(self)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        scope, token = self._conn_scope(), self._token
        if scope.transactions and scope.transactions[-1] is self:
            scope.transactions.pop()
        discard = scope.discard
        try:
            if self._outermost and discard is None:
                discard = await _finish(scope.entry.conn, exc_type is None)  # type: ignore[union-attr]
            elif self._outermost and exc_type is None:
                # A statement was cancelled mid-flight: its outcome is unknown, so the
                # transaction cannot be committed. Closing the connection rolls it back.
                raise peewee.OperationalError(
                    "transaction not committed: a statement in it was cancelled; "
                    "it was rolled back")
        except BaseException:
            discard = "transaction end failed"
            raise
        finally:
            self._scope = None
            await self.db._unpin(scope, token, discard=discard)

    def __repr__(self) -> str:
        return f"<apeewee.Transaction on {self.db.database!r}>"


class Savepoint(_AsyncBlock):
    """A savepoint inside an open transaction: RELEASE on success, ROLLBACK TO on error."""

    def __init__(self, db: AsyncDatabase, sid: str | None = None) -> None:
        self.db = db
        self.sid = sid or "s" + uuid.uuid4().hex
        self.quoted_sid = self.sid.join(db.quote)
        self._scope: TaskScope | None = None

    def _fresh(self) -> Savepoint:
        return Savepoint(self.db)

    async def _run(self, sql: str) -> None:
        scope = self._scope
        if scope is None or scope.entry is None:
            raise peewee.InterfaceError("this savepoint is not active")
        await self.db._execute_on(scope.entry, sql, None)

    async def acommit(self, begin: bool = True) -> None:
        """Release the savepoint; with ``begin`` a new one is set at once."""
        await self._run(f"RELEASE SAVEPOINT {self.quoted_sid}")
        if begin:
            await self._run(f"SAVEPOINT {self.quoted_sid}")

    async def arollback(self, begin: bool = True) -> None:
        """Roll back to the savepoint; with ``begin`` it is set again at once."""
        await self._run(f"ROLLBACK TO SAVEPOINT {self.quoted_sid}")
        if begin:
            await self._run(f"SAVEPOINT {self.quoted_sid}")

    async def __aenter__(self) -> Savepoint:
        scope = self.db._scope()
        if scope is None or not scope.transactions:
            raise peewee.OperationalError("savepoint() needs an open transaction; "
                                          "use `async with db.atomic():`")
        self._scope = scope
        await self._run(f"SAVEPOINT {self.quoted_sid}")
        scope.transactions.append(self)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        scope = self._scope
        if scope is not None and scope.transactions and scope.transactions[-1] is self:
            scope.transactions.pop()
        if scope is not None and scope.discard is not None:
            # The connection is being discarded (a statement was cancelled mid-flight):
            # the enclosing transaction dies with it, so don't talk to it any more.
            if exc_type is None:
                raise peewee.OperationalError(
                    "savepoint not released: a statement in it was cancelled")
            return
        if exc_type is not None:
            await self.arollback(begin=False)
            return
        try:
            await self.acommit(begin=False)
        except BaseException:
            await self.arollback(begin=False)
            raise

    def __repr__(self) -> str:
        return f"<apeewee.Savepoint {self.sid} on {self.db.database!r}>"


class Atomic(_AsyncBlock):
    """A transaction at depth 0, a savepoint when nested: ``async with db.atomic():``.

    As a decorator, ``@db.atomic(retries=3)`` re-runs the function in a new transaction
    when it fails with a serialization failure, deadlock or lock timeout, after a short
    randomized exponential backoff (``backoff`` seconds, doubled each time), only when
    it is the outermost transaction: a nested one cannot be retried alone.
    """

    def __init__(self, db: AsyncDatabase, *args: Any, retries: int = 0,
                 backoff: float = 0.02, **kwargs: Any) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.db = db
        self._args = (args, kwargs)
        self.retries = retries
        self.backoff = backoff
        self._helpers: dict[asyncio.Task[Any] | None, list[Transaction | Savepoint]] = {}

    def _fresh(self) -> Atomic:
        args, kwargs = self._args
        return Atomic(self.db, *args, **kwargs)

    def __call__(self, fn: F) -> F:
        if not self.retries:
            return super().__call__(fn)
        if not asyncio.iscoroutinefunction(fn):
            raise TypeError("atomic() decorates async functions only")

        @functools.wraps(fn)
        async def with_retries(*args: Any, **kwargs: Any) -> Any:
            attempt = 0
            while True:
                outermost = self.db.transaction_depth() == 0
                try:
                    async with self._fresh():
                        return await fn(*args, **kwargs)
                except peewee.DatabaseError as exc:
                    if not outermost or attempt >= self.retries or not is_transient(exc):
                        raise
                    attempt += 1
                    delay = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                    logger.info("%s failed with %r; retry %d of %d in %.3f s",
                                getattr(fn, "__qualname__", fn), exc, attempt, self.retries,
                                delay)
                    await asyncio.sleep(delay)

        return with_retries  # type: ignore[return-value]

    async def __aenter__(self) -> Transaction | Savepoint:
        if self.retries:
            raise TypeError("atomic(retries=...) re-runs a function, and an `async with` "
                            "block cannot be re-run: decorate an async function instead")
        args, kwargs = self._args
        helper: Transaction | Savepoint
        if self.db.transaction_depth() == 0:
            helper = Transaction(self.db, *args, **kwargs)
        else:
            helper = Savepoint(self.db)
        result = await helper.__aenter__()
        self._helpers.setdefault(asyncio.current_task(), []).append(helper)
        return result

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        task = asyncio.current_task()
        stack = self._helpers[task]
        helper = stack.pop()
        if not stack:
            del self._helpers[task]
        await helper.__aexit__(exc_type, exc, tb)


async def _finish(conn: Any, success: bool) -> str | None:
    """End the outermost transaction: commit on success (rolling back if the commit fails),
    else roll back. Returns a reason to discard the connection, or None to reuse it.

    A failed rollback after an error in the block is logged and the connection discarded,
    so the block's own exception is the one that propagates. Cancellation always does.
    """
    if success:
        try:
            await conn.commit()
        except BaseException:
            try:
                await conn.rollback()
            except BaseException:
                pass
            raise
        return None
    try:
        await conn.rollback()
    except Exception as exc:
        logger.warning("rollback after an error failed (%s); discarding the connection", exc)
        return "rollback failed"
    return None

"""Run peewee's own synchronous query logic without blocking, by replaying it.

peewee's write queries, DDL and introspection are sync functions that call
``database.execute()`` / ``execute_sql()`` and read the cursor. ``replay`` runs such a
function; at the first statement whose result it does not have yet, the database raises
``NeedIO`` carrying the compiled SQL. The caller awaits that statement on the driver,
records its result and runs the function again from the start; recorded statements are
answered from the record without compiling or executing again. The function must reach
the same statements in the same order given the same results (peewee's do).

No thread and no greenlet: each pass is plain synchronous Python on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import peewee

from ..drivers.base import Result

__all__ = ["NeedIO", "Replay", "current_replay", "replay", "replay_active"]

T = TypeVar("T")


class NeedIO(BaseException):
    """Raised inside a replayed function at the first statement without a result.

    A BaseException so that no ``except Exception`` in peewee's code can swallow it.
    """

    def __init__(self, sql: str, params: Sequence[Any] | None) -> None:
        super().__init__(sql)
        self.sql = sql
        self.params = params


class Replay:
    """The statements a replayed function has run so far, with their results."""

    __slots__ = ("db", "pos", "results", "sqls")

    def __init__(self, db: Any) -> None:
        self.db = db
        self.results: list[Result] = []
        self.sqls: list[str] = []
        self.pos = 0

    def has_next(self) -> bool:
        return self.pos < len(self.results)

    def take(self) -> Result:
        result = self.results[self.pos]
        self.pos += 1
        result._pos = 0  # rewind: the previous pass may have read it
        return result

    def next(self, sql: str, params: Sequence[Any] | None) -> Result:
        if self.pos < len(self.results):
            if self.sqls[self.pos] != sql:
                raise peewee.InterfaceError(
                    "replayed function is not deterministic: expected "
                    f"{self.sqls[self.pos]!r}, got {sql!r}")
            return self.take()
        raise NeedIO(sql, params)


_current: ContextVar[Replay | None] = ContextVar("apeewee_replay", default=None)


def replay_active() -> bool:
    """True during a synchronous replay pass (of any database)."""
    return _current.get() is not None


def current_replay(db: Any) -> Replay | None:
    """The replay in progress for ``db`` in the running synchronous pass, if any."""
    state = _current.get()
    return state if state is not None and state.db is db else None


async def replay(
    db: Any,
    run_sql: Callable[[str, Sequence[Any] | None], Awaitable[Result]],
    fn: Callable[..., T],
    *args: Any,
    **kwargs: Any,
) -> T:
    """Run ``fn(*args, **kwargs)``, executing each statement it issues with ``run_sql``."""
    state = Replay(db)
    while True:
        # The context variable is set only during the synchronous pass, so it never
        # leaks into tasks created while a statement is awaited.
        token = _current.set(state)
        state.pos = 0
        try:
            return fn(*args, **kwargs)
        except NeedIO as need:
            pending = need
        finally:
            _current.reset(token)
        result = await run_sql(pending.sql, pending.params)
        state.results.append(result)
        state.sqls.append(pending.sql)

"""What the three apeewee databases share: the pool, task scopes, async execution, sync guard.

The mixin goes before peewee's database class in the bases, so peewee keeps SQL
generation, field types and DDL, while connections and execution are ours.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Iterable, Sequence
from contextvars import ContextVar, Token
from typing import Any, TypeVar

import peewee

from ..drivers.base import Driver, DriverConnection, Result
from ..errors import PoolClosed, QueryTimeout, StaleConnection, SyncQueryError
from ..pool import Pool, PooledConnection, PoolStats
from ..queries.compiled import SqlCache
from ..queries.execute import execute_query
from ..queries.replay import current_replay, replay
from ..queries.rows import RowPlans
from ..scope import ConnectionContext, TaskScope, current_scope
from ..transactions import Atomic, Savepoint, Transaction

__all__ = ["AsyncDatabase"]

logger = logging.getLogger("apeewee")

T = TypeVar("T")

POOL_DEFAULTS: dict[str, Any] = {
    "max_connections": 20,
    "min_connections": 0,
    "stale_timeout": None,
    "max_idle": None,
    "ping_after": 2.0,
    "leak_timeout": None,
    "timeout": None,
    "connect_timeout": 10.0,
    "query_timeout": None,
}


class AsyncDatabase:
    """Async connection management and execution for a peewee ``Database`` subclass."""

    # Set by the concrete classes.
    database: str
    quote: str
    deferred: bool

    def __init__(self, database: str | None, *args: Any, **kwargs: Any) -> None:
        self._pool: Pool | None = None
        self._pools: dict[asyncio.AbstractEventLoop, Pool] = {}
        self._scope_var: ContextVar[TaskScope | None] = ContextVar(
            f"apeewee_scope_{id(self):x}", default=None)
        self._db_blocks: dict[Any, list[Atomic]] = {}
        self._pool_options = dict(POOL_DEFAULTS)
        self._server_version_known = False
        self._sql_cache = SqlCache(self)
        super().__init__(database, *args, **kwargs)  # type: ignore[call-arg]

    def init(self, database: str | None, **kwargs: Any) -> None:
        """Configure (or reconfigure) the database; pool options are taken out of kwargs."""
        for name in POOL_DEFAULTS:
            if name in kwargs:
                self._pool_options[name] = kwargs.pop(name)
        self._check_pool_options()
        size = kwargs.pop("sql_cache_size", self._sql_cache.size)
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"sql_cache_size must be an int >= 0, got {size!r}")
        self._retire_pools()
        super().init(database, **kwargs)  # type: ignore[misc]
        if database:
            self._validate_options()
        self._server_version_known = False
        self._sql_cache = SqlCache(self, size)

    def _check_pool_options(self) -> None:
        opts = self._pool_options
        if opts["max_connections"] is None or int(opts["max_connections"]) < 1:
            raise ValueError(f"max_connections must be at least 1, got {opts['max_connections']}")
        if not 0 <= int(opts["min_connections"]) <= int(opts["max_connections"]):
            raise ValueError("min_connections must be between 0 and max_connections")
        for name in ("stale_timeout", "max_idle", "ping_after", "leak_timeout", "timeout",
                     "connect_timeout", "query_timeout"):
            value = opts[name]
            if value is not None and value < 0:
                raise ValueError(f"{name} must be None or >= 0, got {value}")

    # -- to be provided by the concrete databases --------------------------------------

    def _make_driver(self) -> Driver:
        raise NotImplementedError

    def _validate_options(self) -> None:
        """Fail at construction, not at the first query, on bad connection options."""
        self._make_driver()

    def _pool_limits(self) -> dict[str, Any]:
        opts = self._pool_options
        return {
            "max_connections": int(opts["max_connections"]),
            "min_connections": int(opts["min_connections"]),
            "stale_timeout": opts["stale_timeout"],
            "max_idle": opts["max_idle"],
            "ping_after": opts["ping_after"],
            "ping_timeout": min(opts["connect_timeout"] or 5.0, 5.0),
            "leak_timeout": opts["leak_timeout"],
            "timeout": opts["timeout"],
        }

    def _learn_server(self, conn: DriverConnection) -> None:
        """Record the server version from the first connection (peewee reads it for SQL)."""

    # -- pool ----------------------------------------------------------------------------

    def _get_pool(self) -> Pool:
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is not None and pool.loop is loop and not pool.closing:
            return pool
        pool = self._pools.get(loop)
        if pool is not None and pool.closing:
            raise PoolClosed(f"the pool of {self.database!r} is closing (close_pool() is "
                             "running); no new connections until it has finished")
        if pool is None:
            if self.deferred:
                raise peewee.InterfaceError(
                    "the database must be initialized before use: call db.init(...) first")
            self._forget_dead_pools()
            driver = self._make_driver()
            pool = Pool(functools.partial(self._open, driver), name=repr(self.database),
                        **self._pool_limits())
            self._pools[loop] = pool
            _close_at_loop_shutdown(self, loop, pool)
        self._pool = pool
        return pool

    async def _open(self, driver: Driver) -> DriverConnection:
        conn = await driver.connect()
        if not self._server_version_known:
            self._learn_server(conn)
            self._server_version_known = True
            self._sql_cache.clear()  # peewee's SQL may depend on the server version
        return conn

    def _forget_dead_pools(self) -> None:
        # A pool whose loop was closed (a finished asyncio.run, a pytest-asyncio test
        # loop) cannot be closed politely; end its connections without the loop.
        for loop, pool in list(self._pools.items()):
            if loop.is_closed():
                pool.abandon()
                del self._pools[loop]

    def _retire_pools(self) -> None:
        pools = getattr(self, "_pools", {})
        for loop, pool in list(pools.items()):
            if loop.is_closed() or not loop.is_running():
                pool.abandon()
            else:
                loop.call_soon_threadsafe(lambda p=pool: p._spawn(p.close()))
            del pools[loop]
        self._pool = None

    async def close_pool(self, timeout: float | None = 10.0) -> None:
        """Close this loop's pool: idle connections now, checked-out ones when returned or
        after ``timeout`` seconds. The next query opens a new pool."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        self._forget_dead_pools()
        if pool is not None:
            try:
                await pool.close(timeout)
            finally:
                # Only now may a new pool open: during close, acquisitions fail fast.
                if self._pools.get(loop) is pool:
                    del self._pools[loop]
                if self._pool is pool:
                    self._pool = None
            guard = getattr(pool, "shutdown_guard", None)
            if guard is not None:
                pool.shutdown_guard = None
                await guard.aclose()

    async def close_idle(self) -> int:
        """Close this loop's idle connections now (min_connections refill in the
        background); returns how many were closed."""
        pool = self._current_pool()
        return pool.close_idle() if pool is not None else 0

    async def close_stale(self, age: float | None = None) -> int:
        """Close connections checked out for longer than ``age`` seconds (default:
        ``leak_timeout``, else 600), as playhouse.pool's ``close_stale``. Their holders'
        next statement fails; returns how many were closed."""
        if age is None:
            age = self._pool_options["leak_timeout"] or 600.0
        pool = self._current_pool()
        return pool.close_stale(age) if pool is not None else 0

    def _current_pool(self) -> Pool | None:
        try:
            return self._pools.get(asyncio.get_running_loop())
        except RuntimeError:
            return self._pool

    def pool_stats(self) -> PoolStats:
        """Figures of this loop's pool (see ``PoolStats``); zeros before the first query."""
        pool = self._current_pool()
        if pool is None:
            limits = self._pool_limits()
            return PoolStats(max=limits["max_connections"], min=limits["min_connections"],
                             open=0, idle=0, in_use=0, waiting=0)
        return pool.stats()

    # -- task scope: pinned connection and transactions ---------------------------------

    def _scope(self) -> TaskScope | None:
        return current_scope(self._scope_var)

    async def _pin(self) -> tuple[TaskScope, Token[TaskScope | None] | None]:
        scope = current_scope(self._scope_var)
        if scope is not None:
            scope.depth += 1
            return scope, None
        pool = self._get_pool()
        entry = await pool.acquire()
        scope = TaskScope(asyncio.current_task(), entry, pool)
        return scope, self._scope_var.set(scope)

    async def _unpin(self, scope: TaskScope, token: Token[TaskScope | None] | None,
                     discard: str | None = None) -> None:
        if discard is not None:
            scope.discard = discard
        scope.depth -= 1
        if scope.depth > 0:
            return
        entry, scope.entry = scope.entry, None
        if token is not None:
            try:
                self._scope_var.reset(token)
            except ValueError:  # reset from another context; the scope is dead anyway
                pass
        if entry is not None:
            await scope.pool.release(entry, discard=scope.discard)

    def connection(self) -> ConnectionContext:  # type: ignore[override]
        """``async with db.connection() as conn:`` pins one pooled connection to this task."""
        return ConnectionContext(self)

    def connection_context(self) -> ConnectionContext:  # type: ignore[override]
        """Same as ``connection()``; also decorates async functions."""
        return ConnectionContext(self)

    async def aconnect(self, reuse_if_open: bool = False) -> bool:
        """Pin a connection to the current task until ``aclose()`` (or the task ends)."""
        if current_scope(self._scope_var) is not None:
            if reuse_if_open:
                return False
            raise peewee.OperationalError("connection already open in this task")
        scope, token = await self._pin()
        scope.explicit = token
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(functools.partial(_release_at_task_end, scope))
        return True

    async def aclose(self) -> bool:
        """Return the connection pinned by ``aconnect()``; False if there was none."""
        scope = current_scope(self._scope_var)
        if scope is None or scope.explicit is False:
            return False
        token, scope.explicit = scope.explicit, False
        await self._unpin(scope, token)  # type: ignore[arg-type]
        return True

    def is_closed(self) -> bool:
        """True when the current task has no connection pinned to it."""
        return current_scope(self._scope_var) is None

    def in_transaction(self) -> bool:
        scope = current_scope(self._scope_var)
        return bool(scope is not None and scope.transactions)

    def transaction_depth(self) -> int:
        scope = current_scope(self._scope_var)
        return len(scope.transactions) if scope is not None else 0

    def top_transaction(self) -> Transaction | Savepoint | None:
        scope = current_scope(self._scope_var)
        if scope is not None and scope.transactions:
            return scope.transactions[-1]
        return None

    def atomic(self, *args: Any, **kwargs: Any) -> Atomic:  # type: ignore[override]
        """A transaction, or a savepoint when one is open: ``async with db.atomic():``."""
        return Atomic(self, *args, **kwargs)  # type: ignore[arg-type]

    def transaction(self, *args: Any, **kwargs: Any) -> Transaction:  # type: ignore[override]
        """A transaction; nested in another it joins it (the outermost commits)."""
        return Transaction(self, *args, **kwargs)  # type: ignore[arg-type]

    def savepoint(self) -> Savepoint:  # type: ignore[override]
        """A savepoint inside the open transaction."""
        return Savepoint(self)  # type: ignore[arg-type]

    def case_value(self, field: peewee.Field, value: Any) -> Any:
        """A value for a ``CASE ... THEN`` branch of ``field`` (see ``abulk_update``)."""
        return field.case_value(value)

    async def _begin_on(self, entry: PooledConnection, isolation_level: str | None,
                        lock_type: str | None) -> None:
        await entry.conn.begin(isolation_level, lock_type)

    async def __aenter__(self) -> AsyncDatabase:
        block = Atomic(self)  # type: ignore[arg-type]
        await block.__aenter__()
        self._db_blocks.setdefault(asyncio.current_task(), []).append(block)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        task = asyncio.current_task()
        stack = self._db_blocks[task]
        block = stack.pop()
        if not stack:
            del self._db_blocks[task]
        await block.__aexit__(exc_type, exc, tb)

    # -- execution -------------------------------------------------------------------------

    def _compile(self, query: Any) -> tuple[str, list[Any], RowPlans | None]:
        """peewee's SQL and parameters for ``query``, from the compiled-SQL cache when its
        shape was seen before; with the row plans of that shape (None if uncached)."""
        return self._sql_cache.compile(query)

    def clear_sql_cache(self) -> None:
        """Forget every compiled query shape (they are compiled again on next use).
        Needed only after changing a model's table or a field's column at run time
        in a way the cache cannot see (see the README's "Compiled-SQL cache")."""
        self._sql_cache.clear()

    def sql_cache_stats(self) -> dict[str, int]:
        """``{"shapes": ..., "hits": ..., "misses": ...}`` of the compiled-SQL cache."""
        cache = self._sql_cache
        return {"shapes": len(cache._entries), "hits": cache.hits, "misses": cache.misses}

    async def _run_sql(self, sql: str, params: Sequence[Any] | None,
                       timeout: float | None = None) -> Result:
        """Run one statement: on the task's pinned connection, else on one checked out
        for this statement alone and returned at once.

        Outside a transaction a statement is run again once, on a fresh connection, when
        its connection was found dead before it was sent, or when it is a plain SELECT
        whose connection died under it; never otherwise (a write could be doubled).
        """
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug((sql, params))
        if timeout is None:
            timeout = self._pool_options["query_timeout"]
        scope = self._scope_var.get()
        if scope is not None and scope.entry is not None and scope.task is asyncio.current_task():
            return await self._execute_on(scope.entry, sql, params, scope, timeout)
        pool = self._pool
        if pool is None or pool.loop is not asyncio.get_running_loop() or pool.closing:
            pool = self._get_pool()
        entry = await pool.acquire()
        try:
            result = await _execute(entry.conn, sql, params, timeout)
        except asyncio.CancelledError:
            # Cancelled mid-statement: the connection's state is unknown; never reuse it.
            await pool.release(entry, discard="cancelled")
            raise
        except QueryTimeout:
            await pool.release(entry, discard="timed out")
            raise
        except peewee.DatabaseError as exc:
            if entry.conn.is_usable():
                await pool.release(entry)
                raise
            await pool.release(entry, discard="dead")
            if not (isinstance(exc, StaleConnection) or _is_plain_select(sql)):
                raise
            logger.warning("connection died (%s); running the statement again on a fresh "
                           "connection", exc)
            return await self._run_once_more(pool, sql, params, timeout)
        except BaseException:
            await pool.release(entry)
            raise
        await pool.release(entry)
        return result

    async def _run_once_more(self, pool: Pool, sql: str, params: Sequence[Any] | None,
                             timeout: float | None) -> Result:
        entry = await pool.acquire()
        try:
            result = await _execute(entry.conn, sql, params, timeout)
        except asyncio.CancelledError:
            await pool.release(entry, discard="cancelled")
            raise
        except BaseException:
            await pool.release(entry, discard=None if entry.conn.is_usable() else "dead")
            raise
        await pool.release(entry)
        return result

    async def _execute_on(self, entry: PooledConnection, sql: str,
                          params: Sequence[Any] | None, scope: TaskScope | None = None,
                          timeout: float | None = None) -> Result:
        """Run on a pinned connection. If it is cancelled, times out or dies, the
        connection is discarded when the task lets go of it (a transaction on it is lost,
        never retried)."""
        try:
            return await _execute(entry.conn, sql, params, timeout)
        except (asyncio.CancelledError, QueryTimeout) as exc:
            scope = scope or current_scope(self._scope_var)
            if scope is not None:
                scope.discard = "timed out" if isinstance(exc, QueryTimeout) else "cancelled"
            raise
        except peewee.DatabaseError:
            if not entry.conn.is_usable():
                scope = scope or current_scope(self._scope_var)
                if scope is not None:
                    scope.discard = "dead"
            raise

    async def aexecute_sql(self, sql: str, params: Sequence[Any] | None = None,
                           timeout: float | None = None) -> Result:
        """Run SQL written in peewee's placeholder style; returns a fetched cursor-like
        ``Result`` (``fetchall()``, ``fetchone()``, ``description``, ``rowcount``,
        ``lastrowid``). ``timeout`` (default ``query_timeout``) raises ``QueryTimeout``."""
        return await self._run_sql(sql, params, timeout)

    async def aexecute(self, query: Any, timeout: float | None = None) -> Any:
        """Execute any peewee query; returns what peewee's ``execute()`` would.
        ``timeout`` bounds each statement (default ``query_timeout``)."""
        return await execute_query(self, query, timeout)

    async def _replay(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await replay(self, self._run_sql, fn, *args, **kwargs)

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a synchronous peewee call (``query.execute``, ``model.save``...) without
        blocking: at each statement it issues, the statement is awaited on the driver and
        the call re-run from the start with the results so far. So ``fn`` must issue
        the same statements given the same results and have no other side effects; no
        thread or greenlet is involved. This is what peewee's own ``query.aexecute()``
        calls, so that works on plain peewee queries too."""
        return await self._replay(fn, *args, **kwargs)

    async def acreate_tables(self, models: Iterable[type[peewee.Model]], **options: Any) -> None:
        """Create tables, indexes and sequences for ``models``, in dependency order."""
        async with self.connection():
            for model in peewee.sort_models(list(models)):
                await self._replay(model.create_table, **options)

    async def adrop_tables(self, models: Iterable[type[peewee.Model]], **options: Any) -> None:
        """Drop the tables of ``models``, dependents first."""
        async with self.connection():
            for model in reversed(peewee.sort_models(list(models))):
                await self._replay(model.drop_table, **options)

    async def aget_tables(self, schema: str | None = None) -> list[str]:
        """Table names, as peewee's ``get_tables()``."""
        return await self._replay(self.get_tables, schema)  # type: ignore[attr-defined]

    async def atable_exists(self, table_name: str | type[peewee.Model],
                            schema: str | None = None) -> bool:
        """Whether a table exists, as peewee's ``table_exists()``."""
        return await self._replay(self.table_exists, table_name, schema)  # type: ignore[attr-defined]

    async def aget_columns(self, table: str, schema: str | None = None) -> list[Any]:
        """Column metadata, as peewee's ``get_columns()``."""
        return await self._replay(self.get_columns, table, schema)  # type: ignore[attr-defined]

    async def aget_indexes(self, table: str, schema: str | None = None) -> list[Any]:
        """Index metadata, as peewee's ``get_indexes()``."""
        return await self._replay(self.get_indexes, table, schema)  # type: ignore[attr-defined]

    # -- the synchronous API refuses to block ---------------------------------------------

    def execute(self, query: Any, **context_options: Any) -> Any:
        state = current_replay(self)
        if state is not None:
            if state.has_next():
                return state.take()  # answered from the record: no compile, no I/O
            if context_options:
                return super().execute(query, **context_options)  # type: ignore[misc]
            sql, params, _ = self._sql_cache.compile(query)
            return self.execute_sql(sql, params)
        raise SyncQueryError(_sync_message())

    def execute_sql(self, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        state = current_replay(self)
        if state is not None:
            return state.next(sql, params)
        raise SyncQueryError(_sync_message())

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        raise SyncQueryError(_sync_message())

    def connect(self, reuse_if_open: bool = False) -> bool:
        raise SyncQueryError("db.connect() would block the event loop; use "
                             "`await db.aconnect()` or `async with db.connection():`")

    def _connect(self) -> Any:
        raise SyncQueryError("apeewee opens connections only through its async pool")

    def close(self) -> bool:
        raise SyncQueryError("db.close() would block the event loop; use `await db.aclose()` "
                             "or, to close every connection, `await db.close_pool()`")

    def __enter__(self) -> Any:
        raise SyncQueryError("`with db:` would block the event loop; use `async with db:`")

    def __exit__(self, *exc: Any) -> None:  # pragma: no cover - __enter__ always raises
        return None

    def begin(self, *args: Any, **kwargs: Any) -> None:
        raise SyncQueryError("db.begin() would block; use `async with db.atomic():`")

    def commit(self) -> None:
        raise SyncQueryError("db.commit() would block; use `await txn.acommit()` "
                             "inside `async with db.atomic() as txn:`")

    def rollback(self) -> None:
        raise SyncQueryError("db.rollback() would block; use `await txn.arollback()` "
                             "inside `async with db.atomic() as txn:`")

    @property
    def Model(self) -> type[peewee.Model]:
        """A base model class bound to this database, with the async methods."""
        model = self.__dict__.get("_apeewee_model")
        if model is None:
            from ..models import Model

            meta = type("Meta", (), {"database": self})
            model = type("BaseModel", (Model,), {"Meta": meta, "__module__": __name__})
            self.__dict__["_apeewee_model"] = model
        return model

    def __repr__(self) -> str:
        return f"<{type(self).__module__.split('.')[0]}.{type(self).__name__} {self.database!r}>"


async def _execute(conn: DriverConnection, sql: str, params: Sequence[Any] | None,
                   timeout: float | None) -> Result:
    if timeout is None:
        return await conn.execute(sql, params)
    try:
        async with asyncio.timeout(timeout):
            return await conn.execute(sql, params)
    except TimeoutError as exc:
        raise QueryTimeout(f"statement cancelled after {timeout:g} s (query timeout): "
                           f"{sql[:200]}") from exc


def _is_plain_select(sql: str) -> bool:
    """A statement that changes nothing when run twice: SELECT without row locks."""
    head = sql.lstrip()[:7].upper()
    if not head.startswith("SELECT"):
        return False
    upper = sql.upper()
    return " FOR UPDATE" not in upper and " FOR SHARE" not in upper and "NEXTVAL" not in upper


def _close_at_loop_shutdown(db: AsyncDatabase, loop: asyncio.AbstractEventLoop,
                            pool: Pool) -> None:
    """Close ``pool`` politely when its loop shuts down (``asyncio.run``, pytest-asyncio).

    The loop runs ``shutdown_asyncgens()`` before it closes: it finalizes every live
    async generator, running its ``finally`` on the loop. A started generator held by the
    pool is that hook; without it a finished loop's connections could only be dropped.
    """

    async def guard() -> Any:
        try:
            yield
        finally:
            if db._pools.get(loop) is pool:
                del db._pools[loop]
            if db._pool is pool:
                db._pool = None
            await pool.close(timeout=5)

    agen = guard()
    try:
        agen.__anext__().send(None)  # the loop's firstiter hook registers it
    except StopIteration:
        pass
    pool.shutdown_guard = agen  # type: ignore[attr-defined]


def _release_at_task_end(scope: TaskScope, task: asyncio.Task[Any]) -> None:
    """A task ended still holding an ``aconnect()`` connection: return it (rolled back)."""
    entry = scope.entry
    if entry is None:
        return
    scope.entry = None
    logger.warning("task %s ended holding a connection from aconnect(); returning it",
                   task.get_name())
    pool = scope.pool
    if pool.loop.is_closed():
        entry.conn.terminate()
        return
    pool._spawn(pool.release(entry, discard=scope.discard))


# peewee method (outermost peewee frame) -> the async call to use instead.
_ASYNC_EQUIVALENT = {
    "get": "await Model.aget(...)",
    "get_or_none": "await Model.aget_or_none(...)",
    "get_by_id": "await Model.aget_by_id(pk)",
    "get_or_create": "await Model.aget_or_create(...)",
    "create": "await Model.acreate(...)",
    "save": "await instance.asave()",
    "delete_instance": "await instance.adelete_instance()",
    "delete_by_id": "await Model.adelete_by_id(pk)",
    "set_by_id": "await Model.aset_by_id(pk, value)",
    "bulk_create": "await Model.abulk_create(models)",
    "bulk_update": "await Model.abulk_update(models, fields)",
    "insert_many": "await Model.ainsert_many(rows)",
    "execute": "await query.aexecute() (or simply `await query`)",
    "iterator": "async for row in query",
    "__iter__": "rows = await query (or `async for row in query`)",
    "__len__": "rows = await query; len(rows)",
    "__getitem__": "rows = await query; rows[i]",
    "count": "await query.acount()",
    "exists": "await query.aexists()",
    "first": "await query.afirst()",
    "peek": "await query.afirst()",
    "scalar": "await query.ascalar()",
    "create_tables": "await db.acreate_tables([...])",
    "drop_tables": "await db.adrop_tables([...])",
    "create_table": "await db.acreate_tables([Model])",
    "drop_table": "await db.adrop_tables([Model])",
    "table_exists": "await db.atable_exists(name)",
    "get_tables": "await db.aget_tables()",
    "get_columns": "await db.aget_columns(table)",
    "get_indexes": "await db.aget_indexes(table)",
    "prefetch": "an explicit join, or one awaited query per relation",
    "__get__": ("a join that selects the related model (lazy foreign-key access queries); "
                "or `await Related.aget_by_id(obj.fk_id)`"),
}


def _sync_message() -> str:
    """Name the peewee call the user made (outermost peewee frame) and its async form."""
    outermost = None
    frame = sys._getframe(2)
    peewee_file = peewee.__file__
    while frame is not None:
        if frame.f_code.co_filename == peewee_file:
            name = frame.f_code.co_name
            if name == "inner":  # peewee's database_required wrapper: name the method
                method = frame.f_locals.get("method")
                name = getattr(method, "__name__", name)
            outermost = name
        frame = frame.f_back
    hint = _ASYNC_EQUIVALENT.get(outermost or "", "the a-prefixed async method, "
                                 "`await query`, or `await db.aexecute_sql(sql, params)`")
    called = f"peewee's {outermost}()" if outermost else "this synchronous call"
    return (f"{called} would block the event loop on an apeewee database; "
            f"use {hint} instead")

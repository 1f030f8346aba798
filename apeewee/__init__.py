"""apeewee: an asyncio-native connection layer for the peewee ORM."""

from .databases import AsyncDatabase, MySQLDatabase, PostgresqlDatabase, SqliteDatabase
from .drivers.base import Result
from .errors import PoolClosed, PoolTimeout, QueryTimeout, StaleConnection, SyncQueryError
from .models import Model
from .pool import PoolStats
from .proxy import DatabaseProxy
from .queries.awaitable import (
    AsyncModelCompoundSelectQuery,
    AsyncModelDelete,
    AsyncModelInsert,
    AsyncModelRaw,
    AsyncModelSelect,
    AsyncModelUpdate,
)
from .scope import Connection
from .transactions import Atomic, Savepoint, Transaction

__version__ = "0.1.0"

__all__ = [
    "AsyncDatabase",
    "AsyncModelCompoundSelectQuery",
    "AsyncModelDelete",
    "AsyncModelInsert",
    "AsyncModelRaw",
    "AsyncModelSelect",
    "AsyncModelUpdate",
    "Atomic",
    "Connection",
    "DatabaseProxy",
    "Model",
    "MySQLDatabase",
    "PoolClosed",
    "PoolStats",
    "PoolTimeout",
    "PostgresqlDatabase",
    "QueryTimeout",
    "Result",
    "Savepoint",
    "SqliteDatabase",
    "StaleConnection",
    "SyncQueryError",
    "Transaction",
    "__version__",
]

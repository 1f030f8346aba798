"""Exceptions raised by apeewee, each a subclass of the matching peewee exception."""

from __future__ import annotations

import peewee

__all__ = ["PoolClosed", "PoolTimeout", "QueryTimeout", "StaleConnection", "SyncQueryError"]


class PoolTimeout(peewee.OperationalError):
    """No pooled connection became free within the database's ``timeout``."""


class PoolClosed(peewee.OperationalError):
    """The pool is shutting down and hands out no more connections."""


class SyncQueryError(peewee.InterfaceError):
    """A synchronous peewee call would block the event loop; the message names the async call."""


class QueryTimeout(peewee.OperationalError):
    """A statement ran longer than its timeout; it was cancelled and its connection closed."""


class StaleConnection(peewee.OperationalError):
    """The connection was found dead before the statement was sent: nothing of it ran."""

"""Exceptions raised by apeewee, each a subclass of the matching peewee exception."""

from __future__ import annotations

import peewee

__all__ = ["PoolClosed", "PoolTimeout", "SyncQueryError"]


class PoolTimeout(peewee.OperationalError):
    """No pooled connection became free within the database's ``timeout``."""


class PoolClosed(peewee.OperationalError):
    """The pool is shutting down and hands out no more connections."""


class SyncQueryError(peewee.InterfaceError):
    """A synchronous peewee call would block the event loop; the message names the async call."""

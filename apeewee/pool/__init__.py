"""The asyncio connection pool shared by all three drivers."""

from .pool import Pool, PooledConnection
from .stats import PoolStats

__all__ = ["Pool", "PoolStats", "PooledConnection"]

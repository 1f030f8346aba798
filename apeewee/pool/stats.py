"""Pool figures returned by ``db.pool_stats()``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PoolStats:
    """A snapshot of one pool; counters run from the pool's start."""

    max: int  #: max_connections
    min: int  #: min_connections
    open: int  #: connections open now (idle + in use)
    idle: int  #: open and free
    in_use: int  #: checked out by a task
    waiting: int  #: tasks waiting for a connection
    opening: int = 0  #: connects under way
    opened_total: int = 0
    closed_total: int = 0
    acquired_total: int = 0
    timeouts_total: int = 0
    discarded_total: dict[str, int] = field(default_factory=dict)  #: closes by reason
    wait_time_total: float = 0.0  #: seconds tasks spent waiting for a connection
    wait_time_max: float = 0.0

    def __getitem__(self, key: str) -> object:
        """Dict-style access, so ``db.pool_stats()['in_use']`` works too."""
        return getattr(self, key)

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

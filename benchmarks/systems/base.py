"""The interface every benchmarked system implements.

Each operation is one self-contained unit of work, the way an application handler
would write it: it takes a connection from the pool (or lets the library do so) and
gives it back before returning, so 64 concurrent tasks can share a pool of 10.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class System:
    name = "?"
    #: how the 100,000-row stream is done, shown in the report
    stream_note = ""

    async def setup(self, info: dict[str, Any], pool_size: int) -> None:
        """Create the pool / engine / database object; no query needs to run yet."""
        raise NotImplementedError

    async def teardown(self) -> None:
        raise NotImplementedError

    # -- the seven measured operations --------------------------------------------------

    async def get_by_pk(self, pk: int) -> Any:
        """One row by primary key, as a model (raw: a driver row)."""
        raise NotImplementedError

    async def select_100(self, min_value: int) -> list[Any]:
        """WHERE value > min_value ORDER BY id LIMIT 100, as a list of models."""
        raise NotImplementedError

    async def insert(self, name: str, value: int, created: datetime) -> int:
        """Insert one row; return its primary key."""
        raise NotImplementedError

    async def update(self, pk: int, value: int) -> int:
        """UPDATE ... SET value WHERE id = pk; return the row count."""
        raise NotImplementedError

    async def transaction(
        self, name: str, value: int, created: datetime, pk: int, new_value: int
    ) -> Any:
        """In one transaction: insert a row, update row `pk`, then select row `pk`
        (returned as a model)."""
        raise NotImplementedError

    async def count(self, lo: int, hi: int) -> int:
        """count(*) of the rows with lo <= id <= hi."""
        raise NotImplementedError

    async def stream(self, limit: int) -> int:
        """Iterate the rows with id <= limit as tuples without materialising them all;
        return how many rows were seen."""
        raise NotImplementedError

    # -- memory probe only ----------------------------------------------------------------

    async def load_10k(self, limit: int) -> list[Any]:
        """`await q` for the rows with id <= limit, as a list of models."""
        raise NotImplementedError


def pg_dsn(info: dict[str, Any], scheme: str = "postgresql") -> str:
    password = f":{info['password']}" if info["password"] else ""
    return f"{scheme}://{info['user']}{password}@{info['host']}:{info['port']}/{info['database']}"


def mysql_dsn(info: dict[str, Any], scheme: str = "mysql") -> str:
    password = f":{info['password']}" if info["password"] else ""
    return f"{scheme}://{info['user']}{password}@{info['host']}:{info['port']}/{info['database']}"

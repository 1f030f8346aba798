"""Registry of benchmarked systems: name -> (module, class).

Modules are imported lazily inside the worker subprocess, so a missing peer is an
ImportError there, reported as "skipped" by the orchestrator.
"""

from __future__ import annotations

import importlib

from .base import System

SYSTEMS: dict[str, tuple[str, str]] = {
    "raw": ("raw", "RawSystem"),
    "apeewee": ("apeewee_sys", "ApeeweeSystem"),
    "pwasyncio": ("pwasyncio_sys", "PwAsyncioSystem"),
    "peewee-aio": ("peewee_aio_sys", "PeeweeAioSystem"),
    "sqlalchemy-orm": ("sqlalchemy_sys", "SqlAlchemyOrmSystem"),
    "sqlalchemy-core": ("sqlalchemy_sys", "SqlAlchemyCoreSystem"),
    "peewee-sync": ("peewee_sync_sys", "PeeweeSyncSystem"),
    "peewee-async": ("peewee_async_sys", "PeeweeAsyncSystem"),
}

#: distributions whose versions are recorded with each system's results
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "raw": ("asyncpg", "aiomysql", "aiosqlite"),
    "apeewee": ("apeewee", "peewee"),
    "pwasyncio": ("peewee", "greenlet"),
    "peewee-aio": ("peewee-aio", "aio-databases", "peewee"),
    "sqlalchemy-orm": ("sqlalchemy",),
    "sqlalchemy-core": ("sqlalchemy",),
    "peewee-sync": ("peewee", "psycopg2-binary", "pymysql"),
    "peewee-async": ("peewee-async", "peewee", "aiopg"),
}

#: systems run by default; peewee-async needs --with-peewee-async
DEFAULT_SYSTEMS = [name for name in SYSTEMS if name != "peewee-async"]

#: systems that run in the separate peewee-async virtual environment
SEPARATE_VENV = {"peewee-async"}


def load(name: str) -> System:
    module_name, class_name = SYSTEMS[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    system = getattr(module, class_name)()
    system.name = name
    return system

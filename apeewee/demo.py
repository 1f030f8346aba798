"""``python -m apeewee demo``: a few hundred concurrent tasks moving money through a small pool.

Every task runs a transfer in its own transaction (rows locked in id order, so no
deadlocks) plus a read outside any transaction. At the end the total balance must be
unchanged: concurrent tasks never shared a connection or a transaction by accident.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from typing import Any
from urllib.parse import unquote, urlparse

import peewee

import apeewee

__all__ = ["database_from_url", "main", "run_demo"]


def database_from_url(url: str, **pool_options: Any) -> apeewee.AsyncDatabase:
    """An apeewee database for ``sqlite:///path``, ``postgresql://user:pw@host:port/db``
    or ``mysql://user:pw@host:port/db``."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path)
        return apeewee.SqliteDatabase(path or ":memory:", pragmas={"journal_mode": "wal"},
                                      **pool_options)
    params: dict[str, Any] = {}
    if parsed.hostname:
        params["host"] = parsed.hostname
    if parsed.port:
        params["port"] = parsed.port
    if parsed.username:
        params["user"] = unquote(parsed.username)
    if parsed.password is not None:
        params["password"] = unquote(parsed.password)
    name = unquote(parsed.path.lstrip("/"))
    if scheme in ("postgres", "postgresql"):
        return apeewee.PostgresqlDatabase(name, **params, **pool_options)
    if scheme in ("mysql", "mariadb"):
        return apeewee.MySQLDatabase(name, **params, **pool_options)
    raise SystemExit(f"unsupported URL scheme {scheme!r}: use sqlite://, postgresql:// or mysql://")


class Progress:
    """One status line on stderr: redrawn in place on a terminal, every 10% otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.tty = sys.stderr.isatty()
        self._last_decile = -1
        self.start = time.perf_counter()

    def step(self, db: apeewee.AsyncDatabase) -> None:
        self.done += 1
        decile = self.done * 10 // self.total
        if not self.tty and decile == self._last_decile and self.done != self.total:
            return
        self._last_decile = decile
        stats = db.pool_stats()
        width = 30
        filled = width * self.done // self.total
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total}  pool: {stats.in_use} in use, "
                f"{stats.idle} idle, {stats.waiting} waiting")
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        if self.tty and self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def run_demo(db: apeewee.AsyncDatabase, tasks: int, accounts: int,
                   seed: int = 7) -> dict[str, Any]:
    """Run the workload on ``db``; return what was done."""

    class Account(apeewee.Model):
        owner = peewee.CharField(max_length=40, unique=True)
        balance = peewee.IntegerField()

        class Meta:
            database = db
            table_name = "apeewee_demo_account"

    rng = random.Random(seed)
    await db.adrop_tables([Account])
    await db.acreate_tables([Account])
    async with db.atomic():
        await Account.ainsert_many(
            [{"owner": f"owner-{i}", "balance": 1000} for i in range(accounts)])
    ids = [a.id for a in await Account.aselect(Account.id).order_by(Account.id)]
    total_before = await Account.aselect(peewee.fn.SUM(Account.balance)).ascalar()
    locking = db.for_update  # PostgreSQL and MySQL lock rows; SQLite locks the file
    progress = Progress(tasks, "transfers")
    moved = 0
    failures: list[BaseException] = []

    async def transfer(src: int, dst: int, amount: int) -> None:
        nonlocal moved
        first, second = sorted((src, dst))
        atomic = db.atomic() if locking else db.atomic(lock_type="immediate")
        async with atomic:
            query = Account.aselect().where(Account.id.in_([first, second]))
            rows = {a.id: a for a in await (query.for_update() if locking else query)}
            if rows[src].balance >= amount:
                await Account.aupdate(balance=Account.balance - amount).where(Account.id == src)
                await Account.aupdate(balance=Account.balance + amount).where(Account.id == dst)
                moved += amount
        await Account.aget_by_id(dst)  # a read outside the transaction, on any connection

    async def worker(src: int, dst: int, amount: int) -> None:
        try:
            await transfer(src, dst, amount)
        except Exception as exc:  # reported at the end, never silently dropped
            failures.append(exc)
        progress.step(db)

    started = time.perf_counter()
    jobs = []
    for _ in range(tasks):
        src, dst = rng.sample(ids, 2)
        jobs.append(worker(src, dst, rng.randint(1, 50)))
    await asyncio.gather(*jobs)
    elapsed = time.perf_counter() - started
    total_after = await Account.aselect(peewee.fn.SUM(Account.balance)).ascalar()
    stats = db.pool_stats()
    await db.adrop_tables([Account])
    return {
        "tasks": tasks, "accounts": accounts, "moved": moved, "failures": failures,
        "total_before": int(total_before), "total_after": int(total_after),
        "elapsed": elapsed, "stats": stats,
    }


def _report(db: apeewee.AsyncDatabase, result: dict[str, Any]) -> str:
    stats = result["stats"]
    ok = result["total_before"] == result["total_after"] and not result["failures"]
    lines = [
        f"database:   {type(db).__name__} {db.database!r}",
        f"tasks:      {result['tasks']} concurrent transfers over {result['accounts']} accounts "
        f"in {result['elapsed']:.2f} s ({result['tasks'] / result['elapsed']:.0f} tasks/s)",
        f"moved:      {result['moved']} units; total balance {result['total_before']} -> "
        f"{result['total_after']} ({'unchanged' if ok else 'CHANGED'})",
        f"failures:   {len(result['failures'])}"
        + (f" (first: {result['failures'][0]!r})" if result["failures"] else ""),
        f"pool:       max {stats.max}, opened {stats.opened_total}, open {stats.open} "
        f"({stats.idle} idle, {stats.in_use} in use), acquired {stats.acquired_total} times, "
        f"waited {stats.wait_time_total:.2f} s in all (max {stats.wait_time_max * 1000:.0f} ms), "
        f"timeouts {stats.timeouts_total}",
        "result:     OK" if ok else "result:     FAILED",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apeewee", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the concurrent-transfers demo")
    demo.add_argument("--url", help="sqlite:///file.db, postgresql://user@host/db, "
                      "mysql://user@host/db (default: an embedded SQLite file in a temp dir)")
    demo.add_argument("--tasks", type=int, default=300, help="concurrent tasks (default 300)")
    demo.add_argument("--accounts", type=int, default=20, help="accounts (default 20)")
    demo.add_argument("--pool", type=int, default=5, help="max_connections (default 5)")
    demo.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.accounts < 2 or args.pool < 1:
        parser.error("--tasks >= 1, --accounts >= 2 and --pool >= 1 are required")

    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{os.path.join(tmp, 'demo.db')}"
        db = database_from_url(url, max_connections=args.pool, timeout=30)

        async def run() -> dict[str, Any]:
            try:
                return await run_demo(db, args.tasks, args.accounts)
            finally:
                await db.close_pool()

        if args.loop == "uvloop":
            try:
                import uvloop
            except ImportError:
                parser.error("--loop uvloop needs uvloop: pip install uvloop")
            result = uvloop.run(run())
        else:
            result = asyncio.run(run())
    print(_report(db, result))
    ok = result["total_before"] == result["total_after"] and not result["failures"]
    return 0 if ok else 1

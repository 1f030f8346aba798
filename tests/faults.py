"""Fault injection for the tests: throwaway database servers and a TCP proxy that fails.

Tests that stop, restart, kill or cut off a server use these, never the shared servers on
5432/3306:

- ``ThrowawayPostgres`` / ``ThrowawayMariaDB``: a private server in a temp dir, on a free
  port of 127.0.0.1 only (the port stays the same across restarts), user ``postgres`` /
  ``root`` without password, database ``test``. ``start()``, ``stop(mode)``, ``restart()``,
  ``kill()``, ``close()`` (kill + remove the directory); ``astart()``, ``astop()``, ... do the
  same without blocking the event loop while they wait. The data directory is copied from
  a template made once per test process (``initdb`` / ``mariadb-install-db``), so a new
  server costs a copy and a start, not an initialisation.
- ``TcpProxy``: an asyncio TCP proxy on 127.0.0.1 in front of a server, on the test's own
  event loop (apeewee's pools are per loop), that can ``partition()`` (a black hole: no
  byte moves either way, no FIN, no RST, new connections hang), ``heal()``, and ``cut()``
  (reset every current connection, like a proxy's idle cut).
- fixtures ``throwaway_pg`` / ``throwaway_mariadb`` (function scope: a running server,
  restarted if an earlier test left it stopped) over ``throwaway_pg_server`` /
  ``throwaway_mariadb_server`` (module scope: one server per test module).

Use a fixture by importing both functions of its pair into the test module (their Python
names end in ``_fixture`` so that ruff's F811 does not fire on the test's argument):
``from faults import throwaway_pg_fixture, throwaway_pg_server_fixture  # noqa: F401``.
(``pytest_plugins = ["faults"]`` does not work in a module that also imports faults:
pytest fails with "Module already imported so cannot be rewritten".)

When the test process runs as root, the servers run as the ``postgres`` / ``mysql`` OS
user (both refuse to run as root); the temp dirs are owned by that user. The dirs are
``apeewee-faults-*`` under /dev/shm (or $APEEWEE_FAULTS_TMPDIR, else the temp dir). The
servers die with the test process even if it is SIGKILLed (PR_SET_PDEATHSIG); dirs left by
such a process are removed by the next one. Every wait is bounded in time; a server that
does not come up raises ``FaultInfraError`` with its log.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, Self

import pytest

LOOPBACK = "127.0.0.1"
SHARED_PORTS = frozenset({5432, 3306})  # the shared servers: never touched here


def _tmp_root() -> str | None:
    """Where the servers' dirs go: $APEEWEE_FAULTS_TMPDIR, else /dev/shm (tmpfs: no disk
    I/O; a process kill still loses nothing the kernel has), else the default temp dir."""
    env = os.environ.get("APEEWEE_FAULTS_TMPDIR")
    if env:
        return env
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return None


TMP_ROOT = _tmp_root() or tempfile.gettempdir()
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_POLL = 0.01


class FaultInfraError(RuntimeError):
    """A throwaway server or the proxy did not do what was asked within its time bound."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (never 5432 or 3306)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in SHARED_PORTS:
            return port
    raise FaultInfraError("no free port on 127.0.0.1")


# --- waiting: one step generator, driven either blocking or on the event loop ----------


class _Wait:
    """Yielded by a step generator: wait until ``ready()``, at most ``timeout`` seconds."""

    def __init__(self, ready: Callable[[], bool], timeout: float, what: str,
                 detail: Callable[[], str]) -> None:
        self.ready, self.timeout, self.what, self.detail = ready, timeout, what, detail

    def failure(self) -> FaultInfraError:
        return FaultInfraError(f"{self.what}: not done within {self.timeout:g} s\n{self.detail()}")


Steps = Generator[_Wait, None, None]


def _drive(steps: Steps) -> None:
    with contextlib.closing(steps):
        for wait in steps:
            deadline = time.monotonic() + wait.timeout
            while not wait.ready():
                if time.monotonic() > deadline:
                    raise wait.failure()
                time.sleep(_POLL)


async def _adrive(steps: Steps) -> None:
    with contextlib.closing(steps):
        for wait in steps:
            deadline = time.monotonic() + wait.timeout
            while not wait.ready():
                if time.monotonic() > deadline:
                    raise wait.failure()
                await asyncio.sleep(_POLL)


# --- processes ------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _user_kwargs(os_user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a child as ``os_user`` (only when we are root)."""
    if os_user is None:
        return {}
    return {"user": os_user, "group": pwd.getpwnam(os_user).pw_gid, "extra_groups": []}


def _dies_with_us(sig: int) -> Callable[[], None] | None:
    """A preexec_fn so the server gets ``sig`` if the test process dies without cleaning
    up (Linux PR_SET_PDEATHSIG; it follows the creating *thread*, so only from the main
    thread). Runs after the child's setuid, so it survives the user switch."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a killed server's orphaned children
    stay zombies for as long as PID 1 does not reap them)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


_DIR_PREFIX = "apeewee-faults-"
_OWNER_FILE = "faults.owner"


def _process_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # field 22: start time
    except (OSError, IndexError):
        return None


def _sweep_orphans() -> None:
    """Remove the dirs of earlier test processes that died without cleaning up (SIGKILL):
    only ``apeewee-faults-*`` dirs whose owner file names a process that is gone. Their
    servers died with them (PR_SET_PDEATHSIG)."""
    for path in glob.glob(os.path.join(TMP_ROOT, _DIR_PREFIX + "*")):
        try:
            with open(os.path.join(path, _OWNER_FILE)) as f:
                pid_text, start = f.read().split()
        except (OSError, ValueError):
            continue
        if _process_start(int(pid_text)) != start:
            shutil.rmtree(path, ignore_errors=True)


def _make_dir(kind: str, os_user: str | None) -> str:
    path = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{kind}-", dir=TMP_ROOT)
    with open(os.path.join(path, _OWNER_FILE), "w") as f:
        f.write(f"{os.getpid()} {_process_start(os.getpid())}\n")
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _check(cmd: list[str], *, os_user: str | None, cwd: str, timeout: float = 60,
           stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, check=False, **_user_kwargs(os_user))
    if proc.returncode != 0:
        raise FaultInfraError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                              f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


_TEMPLATES: dict[tuple[str, ...], str] = {}
_LIVE: set[_Server] = set()


@atexit.register
def _cleanup_at_exit() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()
    for path in _TEMPLATES.values():
        shutil.rmtree(path, ignore_errors=True)
    _TEMPLATES.clear()


# --- servers --------------------------------------------------------------------------


class _Server:
    """What both throwaway servers share: one temp dir, one fixed port, one process."""

    kind = "?"
    user = ""
    password = ""
    database = "test"
    os_user: str | None = None
    death_signal = signal.SIGKILL

    def __init__(self, *, port: int | None = None) -> None:
        if port in SHARED_PORTS:
            raise ValueError(f"port {port} belongs to a shared server")
        self.host = LOOPBACK
        self.port = port or free_port()
        self.base_dir: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0  # how many times the server process was started

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"

    # the address -----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def params(self, **overrides: Any) -> dict[str, Any]:
        """host, port, user, database (+ password for MariaDB); ``overrides`` replace
        entries, e.g. ``params(port=proxy.port)`` to go through a TcpProxy."""
        base: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user,
                                "database": self.database}
        return {**base, **overrides}

    def dsn(self, **overrides: Any) -> str:
        p = self.params(**overrides)
        return f"{self.kind}://{p['user']}@{p['host']}:{p['port']}/{p['database']}"

    # state -----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> str:
        return os.path.join(self.base_dir or "/nonexistent", "server.log")

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    # lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server (making its data dir the first time) and wait until it accepts
        connections. The port is the same as before a stop."""
        _drive(self._start_steps(timeout))

    async def astart(self, timeout: float = START_TIMEOUT) -> None:
        await _adrive(self._start_steps(timeout))

    def stop(self, mode: str = "fast", timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server and wait for its process to exit (no-op if not running)."""
        _drive(self._stop_steps(mode, timeout))

    async def astop(self, mode: str = "fast", timeout: float = STOP_TIMEOUT) -> None:
        await _adrive(self._stop_steps(mode, timeout))

    def restart(self, mode: str = "fast", timeout: float = START_TIMEOUT) -> None:
        """stop(mode) (or kill() for ``mode="kill"``), then start(), on the same port."""
        _drive(self._restart_steps(mode, timeout))

    async def arestart(self, mode: str = "fast", timeout: float = START_TIMEOUT) -> None:
        await _adrive(self._restart_steps(mode, timeout))

    def kill(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGKILL the server and all its processes at once (a crash / power cut)."""
        _drive(self._kill_steps(timeout))

    async def akill(self, timeout: float = STOP_TIMEOUT) -> None:
        await _adrive(self._kill_steps(timeout))

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def close(self) -> None:
        """Kill the server if it runs and remove its directory. Idempotent."""
        try:
            if self.running:
                self.kill()
        finally:
            self._reap()
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            _LIVE.discard(self)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # steps -----------------------------------------------------------------------------

    def _start_steps(self, timeout: float) -> Steps:
        if self.running:
            return
        if self.base_dir is None:
            _LIVE.add(self)
            self.base_dir = _make_dir(self.kind, self.os_user)
            template = self._template()
            # cp -a keeps the owner (the server's OS user) and the modes
            _check(["cp", "-a", os.path.join(template, "data"), self._data_dir()],
                   os_user=None, cwd=self.base_dir)
        mark = self._before_spawn()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._server_command(), cwd=self.base_dir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_dies_with_us(self.death_signal), **_user_kwargs(self.os_user))
        self.starts += 1
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise FaultInfraError(f"{self!r} exited with {proc.returncode} while "
                                      f"starting\n{self.log_tail()}")
            return self._ready(proc.pid, mark)

        yield _Wait(ready, timeout, f"{self!r} start", self.log_tail)

    def _stop_steps(self, mode: str, timeout: float) -> Steps:
        sig = self._stop_signal(mode)
        if not self.running or self.proc is None:
            self._reap()
            return
        proc = self.proc
        proc.send_signal(sig)
        yield _Wait(lambda: proc.poll() is not None, timeout, f"{self!r} stop ({mode})",
                    self.log_tail)
        self._reap()

    def _kill_steps(self, timeout: float) -> Steps:
        if not self.running or self.proc is None:
            self._reap()
            return
        proc = self.proc
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)  # no new children from here on
        group = [proc.pid, *_children(proc.pid)]
        for pid in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        yield _Wait(lambda: proc.poll() is not None and not any(map(_alive, group)), timeout,
                    f"{self!r} kill", self.log_tail)
        self._reap()

    def _restart_steps(self, mode: str, timeout: float) -> Steps:
        if mode == "kill":
            yield from self._kill_steps(timeout)
        else:
            yield from self._stop_steps(mode, timeout)
        yield from self._start_steps(timeout)

    def _reap(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.proc.wait()

    # per kind --------------------------------------------------------------------------

    def _data_dir(self) -> str:
        assert self.base_dir is not None
        return os.path.join(self.base_dir, "data")

    def _template(self) -> str:
        raise NotImplementedError

    def _server_command(self) -> list[str]:
        raise NotImplementedError

    def _before_spawn(self) -> Any:
        return None

    def _ready(self, pid: int, mark: Any) -> bool:
        raise NotImplementedError

    def _stop_signal(self, mode: str) -> int:
        raise NotImplementedError


def pg_bindir() -> str:
    """PostgreSQL's server binaries: $APEEWEE_PG_BINDIR, else the newest
    /usr/lib/postgresql/*/bin."""
    env = os.environ.get("APEEWEE_PG_BINDIR")
    if env:
        return env
    found = glob.glob("/usr/lib/postgresql/*/bin/postgres")
    if not found:
        raise FaultInfraError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")

    def version(path: str) -> tuple[int, ...]:
        v = path.split("/")[-3]
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    return os.path.dirname(max(found, key=version))


class ThrowawayPostgres(_Server):
    """A private PostgreSQL: trust auth, listening on 127.0.0.1:<port> only, its unix
    socket in its own dir, fsync off, small shared_buffers, database ``test``. A committed
    transaction survives ``kill()`` and ``stop("immediate")``.

    ``stop(mode)``: ``"smart"`` (waits for clients: use ``astop`` from a test whose
    clients run on the same loop), ``"fast"`` (default; disconnects clients, clean
    shutdown), ``"immediate"`` (no checkpoint: crash recovery at the next start).
    ``kill()``: SIGKILL to the postmaster and every backend at once.
    """

    kind = "postgresql"
    user = "postgres"
    death_signal = signal.SIGQUIT

    def __init__(self, *, port: int | None = None, bindir: str | None = None,
                 settings: dict[str, str] | None = None) -> None:
        super().__init__(port=port)
        self.bindir = bindir or pg_bindir()
        self.os_user = "postgres" if os.geteuid() == 0 else None
        self.settings = {
            # fsync off but synchronous_commit on: a commit is in the kernel when it
            # returns, so it survives kill() (a process crash), not an OS crash
            "listen_addresses": LOOPBACK, "fsync": "off", "full_page_writes": "off",
            "shared_buffers": "16MB", "max_connections": "50", "logging_collector": "off",
            # DSM segments as files in the data dir: removed with it even after a kill
            # (the default, posix, leaves /dev/shm/PostgreSQL.* behind a SIGKILL)
            "dynamic_shared_memory_type": "mmap",
            **(settings or {}),
        }

    @property
    def socket_dir(self) -> str | None:
        return self.base_dir

    def _template(self) -> str:
        key = ("pg", self.bindir, str(self.os_user))
        if key not in _TEMPLATES:
            _sweep_orphans()
            tpl = _make_dir("pgtemplate", self.os_user)
            try:
                data = os.path.join(tpl, "data")
                _check([os.path.join(self.bindir, "initdb"), "-D", data, "-U", "postgres",
                        "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--wal-segsize=1",
                        "--no-instructions"], os_user=self.os_user, cwd=tpl)
                out = _check([os.path.join(self.bindir, "postgres"), "--single", "-D", data,
                              "-F", "postgres"], os_user=self.os_user, cwd=tpl,
                             stdin="CREATE DATABASE test;\n")
                if "ERROR" in out:
                    raise FaultInfraError(f"CREATE DATABASE test failed:\n{out}")
            except BaseException:
                shutil.rmtree(tpl, ignore_errors=True)
                raise
            _TEMPLATES[key] = tpl
        return _TEMPLATES[key]

    def _server_command(self) -> list[str]:
        cmd = [os.path.join(self.bindir, "postgres"), "-D", self._data_dir(),
               "-c", f"port={self.port}", "-c", f"unix_socket_directories={self.base_dir}"]
        for name, value in self.settings.items():
            cmd += ["-c", f"{name}={value}"]
        return cmd

    def _ready(self, pid: int, mark: Any) -> bool:
        # postmaster.pid: line 1 the pid, line 8 the status ("ready" once it accepts
        # connections); checking the pid ignores a stale file left by a kill
        try:
            with open(os.path.join(self._data_dir(), "postmaster.pid")) as f:
                lines = f.read().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def _stop_signal(self, mode: str) -> int:
        signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
        if mode not in signals:
            raise ValueError(f"mode must be one of {sorted(signals)} (or kill()), not {mode!r}")
        return signals[mode]

    def execute(self, sql: str, database: str = "test") -> str:
        """Run ``sql`` with psql over the unix socket (works behind a partition); the
        rows as ``a|b`` lines."""
        assert self.base_dir is not None
        return _check([os.path.join(self.bindir, "psql"), "-X", "-A", "-t", "-q",
                       "-v", "ON_ERROR_STOP=1", "-h", self.base_dir, "-p", str(self.port),
                       "-U", self.user, "-d", database, "-c", sql],
                      os_user=None, cwd=self.base_dir, timeout=30)

    def terminate_connections(self) -> int:
        """pg_terminate_backend() every client connection (the server stays up); how many."""
        out = self.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        return int(out.strip() or 0)


def _which(*names: str) -> str:
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
        if path:
            return path
    raise FaultInfraError(f"none of {names} found")


class ThrowawayMariaDB(_Server):
    """A private MariaDB (or MySQL-compatible mariadbd): user ``root`` with an empty
    password, listening on 127.0.0.1:<port> only (plus a unix socket in its dir),
    skip-name-resolve, no binlog, small InnoDB buffers, database ``test``.

    ``stop(mode)``: ``"fast"`` (default; SIGTERM, normal shutdown) or ``"immediate"``
    (SIGKILL: InnoDB crash recovery at the next start, same as ``kill()``).
    """

    kind = "mysql"
    user = "root"
    password = ""
    death_signal = signal.SIGKILL
    READY_LINE = "ready for connections"

    def __init__(self, *, port: int | None = None, options: list[str] | None = None) -> None:
        super().__init__(port=port)
        self.mariadbd = _which("mariadbd", "mysqld")
        self.os_user = "mysql" if os.geteuid() == 0 else None
        self.options = [
            "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
            # 2: the redo log is written to the kernel at each commit, flushed once a
            # second: a commit survives kill() (a process crash), not an OS crash
            "--innodb-log-file-size=8M", "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=100", *(options or []),
        ]

    def params(self, **overrides: Any) -> dict[str, Any]:
        return super().params(**{"password": self.password, **overrides})

    def aiomysql_params(self, **overrides: Any) -> dict[str, Any]:
        """params() spelled for ``aiomysql.connect`` (``db`` instead of ``database``)."""
        p = self.params(**overrides)
        p["db"] = p.pop("database")
        return p

    @property
    def socket_path(self) -> str:
        assert self.base_dir is not None
        return os.path.join(self.base_dir, "mysqld.sock")

    def _template(self) -> str:
        key = ("mariadb", self.mariadbd, str(self.os_user))
        if key not in _TEMPLATES:
            _sweep_orphans()
            tpl = _make_dir("mysqltemplate", self.os_user)
            try:
                cmd = [_which("mariadb-install-db", "mysql_install_db"), "--no-defaults",
                       f"--datadir={os.path.join(tpl, 'data')}",
                       "--auth-root-authentication-method=normal", "--skip-name-resolve",
                       "--innodb-log-file-size=8M", "--innodb-buffer-pool-size=16M"]
                if self.os_user is not None:
                    cmd.append(f"--user={self.os_user}")  # it chowns and drops to that user
                _check(cmd, os_user=None, cwd=tpl, timeout=120)  # creates database `test`
                if not os.path.isdir(os.path.join(tpl, "data", "test")):
                    raise FaultInfraError("mariadb-install-db made no database `test`")
            except BaseException:
                shutil.rmtree(tpl, ignore_errors=True)
                raise
            _TEMPLATES[key] = tpl
        return _TEMPLATES[key]

    def _server_command(self) -> list[str]:
        assert self.base_dir is not None
        return [self.mariadbd, "--no-defaults", f"--datadir={self._data_dir()}",
                f"--socket={self.socket_path}", f"--port={self.port}",
                f"--bind-address={LOOPBACK}",
                f"--pid-file={os.path.join(self.base_dir, 'mysqld.pid')}",
                f"--log-error={self.log_path}", f"--tmpdir={self.base_dir}", *self.options]

    def _before_spawn(self) -> Any:
        return self._ready_lines()

    def _ready_lines(self) -> int:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read().count(self.READY_LINE)
        except OSError:
            return 0

    def _ready(self, pid: int, mark: Any) -> bool:
        return self._ready_lines() > int(mark)

    def _stop_signal(self, mode: str) -> int:
        signals = {"fast": signal.SIGTERM, "immediate": signal.SIGKILL}
        if mode not in signals:
            raise ValueError(f"mode must be one of {sorted(signals)} (or kill()), not {mode!r}")
        return signals[mode]

    def execute(self, sql: str, database: str = "test") -> str:
        """Run ``sql`` with the mariadb client over the unix socket; tab-separated rows."""
        assert self.base_dir is not None
        return _check([_which("mariadb", "mysql"), "--no-defaults", "-S", self.socket_path,
                       "-u", self.user, "-N", "-B", "-e", sql, database],
                      os_user=None, cwd=self.base_dir, timeout=30)

    def terminate_connections(self) -> int:
        """KILL every client connection (the server stays up); how many."""
        ids = self.execute("SELECT id FROM information_schema.processlist "
                           "WHERE id <> connection_id() AND command <> 'Daemon' "
                           "AND user NOT IN ('system user', 'event_scheduler')").split()
        if ids:
            with contextlib.suppress(FaultInfraError):  # one may have gone meanwhile
                self.execute("; ".join(f"KILL CONNECTION {int(i)}" for i in ids))
        return len(ids)


# --- the proxy ------------------------------------------------------------------------

_CHUNK = 65536
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with RST (SO_LINGER 0, then abort): the peer's next read fails."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection through the proxy and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, task: asyncio.Task[Any] | None) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task = task
        self.done = asyncio.Event()

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def shut(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class TcpProxy:
    """An asyncio TCP proxy 127.0.0.1:<port> -> ``target_host:target_port``.

    Runs on the loop that starts it (``async with TcpProxy(host, port) as proxy``), so it
    must be made by the test (or a function-scoped async fixture), like apeewee's pools.

    - ``partition()``: a black hole. Open connections stay open but no byte moves in
      either direction (bytes already read are held, not lost: TCP would retransmit them),
      no FIN, no RST; new connections are accepted but neither connected upstream nor
      answered. ``heal()``: everything held moves again (held new connections connect).
    - ``cut(rst=True)``: every current connection is reset on both sides (``rst=False``:
      closed with FIN); the proxy keeps accepting new ones.
    - ``active``: connections open through the proxy now; ``accepted``: ever.
    """

    def __init__(self, target_host: str, target_port: int, *,
                 connect_timeout: float = 5.0) -> None:
        if target_host not in _LOOPBACK_NAMES:
            raise ValueError(f"the proxy only forwards to loopback, not {target_host!r}")
        self.target = (target_host, target_port)
        self.host = LOOPBACK
        self.port = 0
        self.connect_timeout = connect_timeout
        self.accepted = 0
        self.errors: list[BaseException] = []  # unexpected errors in connection handlers
        self._links: set[_Link] = set()
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        state = "partitioned" if self.partitioned else "flowing"
        return (f"<TcpProxy {self.host}:{self.port} -> {self.target[0]}:{self.target[1]} "
                f"{state}, {self.active} active>")

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def active(self) -> int:
        return len(self._links)

    @property
    def partitioned(self) -> bool:
        return self._flowing is not None and not self._flowing.is_set()

    async def start(self) -> TcpProxy:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def partition(self) -> None:
        assert self._flowing is not None, "start the proxy first"
        self._flowing.clear()

    def heal(self) -> None:
        assert self._flowing is not None, "start the proxy first"
        self._flowing.set()

    async def cut(self, *, rst: bool = True, timeout: float = 5.0) -> int:
        """Close every current connection (RST by default) and wait until they are gone;
        how many there were."""
        links = list(self._links)
        for link in links:
            if rst:
                link.reset()
            else:
                link.shut()
        await self._gone(links, timeout)
        return len(links)

    async def wait_active(self, count: int, timeout: float = 5.0) -> None:
        """Wait until exactly ``count`` connections are open through the proxy."""
        deadline = time.monotonic() + timeout
        while self.active != count:
            if time.monotonic() > deadline:
                raise FaultInfraError(f"{self!r}: not {count} active within {timeout:g} s")
            await asyncio.sleep(_POLL)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, reset every connection. Idempotent."""
        if self._server is not None:
            self._server.close()
        await self.cut(rst=True, timeout=timeout)
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.wait_for(server.wait_closed(), timeout)

    async def _gone(self, links: list[_Link], timeout: float) -> None:
        if links:
            try:
                await asyncio.wait_for(asyncio.gather(*(lk.done.wait() for lk in links)),
                                       timeout)
            except TimeoutError:
                raise FaultInfraError(f"{self!r}: connections not closed within "
                                      f"{timeout:g} s") from None

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        link = _Link(writer, asyncio.current_task())
        self._links.add(link)
        self.accepted += 1
        try:
            await self._flowing.wait()  # partitioned: held, unanswered
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), self.connect_timeout)
            except (OSError, TimeoutError):
                _reset(writer)  # upstream refused / unreachable: so is the proxy
                return
            link.upstream = up_writer
            await asyncio.gather(self._pump(reader, up_writer, link),
                                 self._pump(up_reader, writer, link))
        except asyncio.CancelledError:
            pass  # cut() or close(): this task is the proxy's own
        except Exception as exc:
            self.errors.append(exc)
        finally:
            link.shut()
            self._links.discard(link)
            link.done.set()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    link: _Link) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await src.read(_CHUNK)
                await self._flowing.wait()  # read just before a partition: held till heal
                if not data:  # FIN from one side: pass the half-close on
                    if dst.can_write_eof() and not dst.transport.is_closing():
                        dst.write_eof()
                    return
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            link.reset()  # reset on one side: reset the other


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module", name="throwaway_pg_server")
def throwaway_pg_server_fixture() -> Iterator[ThrowawayPostgres]:
    """One throwaway PostgreSQL for the test module; killed and removed after it."""
    server = ThrowawayPostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(name="throwaway_pg")
def throwaway_pg_fixture(throwaway_pg_server: ThrowawayPostgres) -> ThrowawayPostgres:
    """The module's throwaway PostgreSQL, running (started again if an earlier test
    stopped or killed it). Stop, restart, kill it at will."""
    throwaway_pg_server.ensure_running()
    return throwaway_pg_server


@pytest.fixture(scope="module", name="throwaway_mariadb_server")
def throwaway_mariadb_server_fixture() -> Iterator[ThrowawayMariaDB]:
    """One throwaway MariaDB for the test module; killed and removed after it."""
    server = ThrowawayMariaDB()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(name="throwaway_mariadb")
def throwaway_mariadb_fixture(throwaway_mariadb_server: ThrowawayMariaDB) -> ThrowawayMariaDB:
    """The module's throwaway MariaDB, running (started again if an earlier test stopped
    or killed it)."""
    throwaway_mariadb_server.ensure_running()
    return throwaway_mariadb_server

"""The benchmark subprocess: runs one system's steps and reports JSON lines on stdout.

Usage (by the orchestrator only): python -m benchmarks.worker '<json spec>'

Every output line meant for the orchestrator starts with MARK; anything else a
library prints is ignored. Events: hello, skip, fatal, step, memory, done.

Memory is the growth of the process's peak RSS during the first call of the probed
operation in a fresh process (after one warm-up get_by_pk): the kernel's high-water
mark is reset just before the call through /proc/self/clear_refs and read back from
VmHWM (elsewhere: ru_maxrss, a lower bound). RSS counts everything the call touched:
Python objects, driver C buffers (libpq, sqlite), thread stacks. Only the first heavy
call in a process is measured, because memory the allocator keeps after one call
would hide part of the next call's need.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

from . import systems
from .workload import CONCURRENCY, POOL_SIZE, arg_factory, budget, check, stream_rows

MARK = "@@bench "
Op = Callable[..., Awaitable[Any]]


class CheckFailed(AssertionError):
    pass


def emit(event: str, **data: Any) -> None:
    sys.stdout.write(MARK + json.dumps({"event": event, **data}, default=str) + "\n")
    sys.stdout.flush()


def error_text(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:500]


def _verify(op: str, args: tuple, result: Any) -> None:
    problem = check(op, args, result)
    if problem:
        raise CheckFailed(f"{op}{args!r}: {problem}")


# -- measurement ----------------------------------------------------------------------


class Step:
    """One measured (mode, op): its budget, its argument streams, and a count of calls
    that completed (the orchestrator checks inserted rows against it)."""

    def __init__(self, mode: str, op: str, spec: dict[str, Any]) -> None:
        b = budget(op, mode, spec["quick"])
        assert b is not None
        self.mode, self.op, self.budget = mode, op, b
        rows = stream_rows(spec["quick"])
        self.warm_args = arg_factory(op, f"{spec['seed']}:{mode}:warm", rows)
        self.run_args = arg_factory(op, f"{spec['seed']}:{mode}:run", rows)
        self.calls = 0


async def measure_latency(fn: Op, step: Step) -> dict[str, Any]:
    """One task, sequential; per-op wall time. Results are checked outside the timing."""
    op, b = step.op, step.budget
    for i in range(b.warmup):
        args = step.warm_args(i)
        _verify(op, args, await fn(*args))
        step.calls += 1

    arg_list = [step.run_args(i) for i in range(b.max_ops)]
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(b.max_seconds * 1e9)
    for i, args in enumerate(arg_list):
        t0 = clock()
        result = await fn(*args)
        t1 = clock()
        samples.append(t1 - t0)
        step.calls += 1
        if i < 20 or i % 16 == 0:
            _verify(op, args, result)
        del result
        if t1 >= deadline:
            break
    samples.sort()
    return {
        "ops": len(samples),
        "median_us": statistics.median(samples) / 1000,
        "p90_us": samples[int(len(samples) * 0.9)] / 1000 if len(samples) >= 10 else None,
        "mean_us": statistics.fmean(samples) / 1000,
    }


async def measure_throughput(fn: Op, step: Step) -> dict[str, Any]:
    """CONCURRENCY tasks share one pool of POOL_SIZE connections; total ops per second."""
    op, b = step.op, step.budget

    async def burst(arg_list: list[tuple], seconds: float, verify: bool) -> int:
        next_index = 0
        done = 0
        deadline = time.perf_counter() + seconds

        async def task() -> None:
            nonlocal next_index, done
            while next_index < len(arg_list) and time.perf_counter() < deadline:
                args = arg_list[next_index]
                next_index += 1
                result = await fn(*args)
                done += 1
                step.calls += 1
                if verify:
                    _verify(op, args, result)

        async with asyncio.TaskGroup() as group:
            for _ in range(CONCURRENCY):
                group.create_task(task())
        return done

    if b.warmup:
        warm_list = [step.warm_args(i) for i in range(b.warmup)]
        await burst(warm_list, b.max_seconds + 30, verify=True)

    arg_list = [step.run_args(i) for i in range(b.max_ops)]
    t0 = time.perf_counter()
    done = await burst(arg_list, b.max_seconds, verify=op == "stream")
    elapsed = time.perf_counter() - t0
    return {"ops": done, "seconds": elapsed, "ops_per_s": done / elapsed}


class RssProbe:
    """Wraps an operation; measures peak RSS growth during its first call only."""

    def __init__(self, fn: Op) -> None:
        self.fn = fn
        self.result: dict[str, Any] | None = None

    async def __call__(self, *args: Any) -> Any:
        if self.result is not None:
            return await self.fn(*args)
        gc.collect()
        before, method = _rss_reset()
        t0 = time.perf_counter()
        value = await self.fn(*args)
        elapsed = time.perf_counter() - t0
        self.result = {
            "peak_bytes": max(0, _rss_peak(method) - before),
            "method": method,
            "seconds": elapsed,
        }
        return value


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _rss_reset() -> tuple[int, str]:
    """Reset the peak-RSS mark; return (current RSS, method)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status("VmRSS"), "VmHWM"
    except OSError:
        return _maxrss(), "ru_maxrss"


def _rss_peak(method: str) -> int:
    return _proc_status("VmHWM") if method == "VmHWM" else _maxrss()


def _maxrss() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# -- driver ---------------------------------------------------------------------------


def versions(name: str) -> dict[str, str]:
    found = {}
    for dist in systems.DISTRIBUTIONS.get(name, ()):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


async def run(spec: dict[str, Any]) -> None:
    name, info = spec["system"], spec["info"]
    try:
        system = systems.load(name)
        await system.setup(info, POOL_SIZE)
    except ImportError as exc:
        emit("skip", reason=error_text(exc))
        return
    except Exception as exc:
        emit("fatal", error=error_text(exc), trace=traceback.format_exc())
        return
    emit(
        "hello",
        versions=versions(name),
        python=platform.python_version(),
        loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        stream_note=system.stream_note,
    )
    try:
        try:  # warm: open a connection, pull in lazily imported modules before any probe
            _verify("get_by_pk", (1,), await system.get_by_pk(1))
        except Exception as exc:
            emit("fatal", error=error_text(exc), trace=traceback.format_exc())
            return
        probes = {op: RssProbe(getattr(system, op)) for op in spec["memory"]}
        step_ops = {op for _, op in spec["steps"]}
        for op in spec["memory"]:
            if op not in step_ops:  # a probe-only process: one call
                args = arg_factory(op, f"{spec['seed']}:memory", stream_rows(spec["quick"]))(0)
                try:
                    _verify(op, args, await probes[op](*args))
                except Exception as exc:
                    emit("memory", op=op, error=error_text(exc))
        # rows committed by completed insert/transaction calls; a failed call may or may
        # not have committed, which turns the orchestrator's exact check into a minimum
        inserted, exact = 0, True
        stuck = None
        for mode, op in spec["steps"]:
            if stuck:
                emit("step", mode=mode, op=op, error=f"not run: {stuck}")
                continue
            step = Step(mode, op, spec)
            fn = probes.get(op) or getattr(system, op)
            measure = measure_latency if mode == "latency" else measure_throughput
            limit = step.budget.max_seconds + (20 if spec["quick"] else 120)
            t0 = time.perf_counter()
            try:
                result = await asyncio.wait_for(measure(fn, step), limit)
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    stuck = f"{mode} {op} did not finish within {limit:.0f} s"
                    exc = TimeoutError(stuck)
                emit("step", mode=mode, op=op, error=error_text(exc))
                exact = exact and op not in ("insert", "transaction")
                continue
            finally:
                if op in ("insert", "transaction"):
                    inserted += step.calls
            emit("step", mode=mode, op=op, wall=time.perf_counter() - t0, **result)
        for op, probe in probes.items():
            if probe.result is not None:
                emit("memory", op=op, **probe.result)
        emit("writes", inserted=inserted, exact=exact)
        if stuck:  # a wedged pool may hang teardown as well: leave it to process exit
            emit("done")
            sys.stdout.flush()
            os._exit(0)
    finally:
        try:
            await asyncio.wait_for(system.teardown(), 30)
        except Exception as exc:
            print(f"teardown failed: {error_text(exc)}", file=sys.stderr)
    emit("done")


def main() -> None:
    spec = json.loads(sys.argv[1])
    loop_factory = None
    if spec.get("loop") == "uvloop":
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            print("uvloop is not installed here: using the asyncio loop", file=sys.stderr)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run(spec))


if __name__ == "__main__":
    main()

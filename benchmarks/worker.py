"""The benchmark subprocess: runs one system's steps and reports JSON lines on stdout.

Usage (by the orchestrator only): python -m benchmarks.worker '<json spec>'

Every output line meant for the orchestrator starts with MARK; anything else a
library prints is ignored. Events: hello, skip, fatal, step, memory, done.
"""

from __future__ import annotations

import asyncio
import gc
import json
import platform
import statistics
import sys
import time
import tracemalloc
import traceback
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

from . import systems
from .workload import CONCURRENCY, MEM_OPS, POOL_SIZE, Budget, arg_factory, budget, check

MARK = "@@bench "
Op = Callable[..., Awaitable[Any]]


class CheckFailed(AssertionError):
    pass


def emit(event: str, **data: Any) -> None:
    sys.stdout.write(MARK + json.dumps({"event": event, **data}, default=str) + "\n")
    sys.stdout.flush()


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _verify(op: str, args: tuple, result: Any) -> None:
    problem = check(op, args, result)
    if problem:
        raise CheckFailed(f"{op}{args!r}: {problem}")


# -- measurement ----------------------------------------------------------------------


async def measure_latency(fn: Op, op: str, b: Budget, seed: int) -> dict[str, Any]:
    """One task, sequential; per-op wall time. Results are checked outside the timing."""
    warm = arg_factory(op, seed + 7919)
    for i in range(b.warmup):
        args = warm(i)
        _verify(op, args, await fn(*args))

    make = arg_factory(op, seed)
    arg_list = [make(i) for i in range(b.max_ops)]
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(b.max_seconds * 1e9)
    for i, args in enumerate(arg_list):
        t0 = clock()
        result = await fn(*args)
        t1 = clock()
        samples.append(t1 - t0)
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


async def measure_throughput(fn: Op, op: str, b: Budget, seed: int) -> dict[str, Any]:
    """CONCURRENCY tasks share one pool of POOL_SIZE connections; total ops per second."""

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
                if verify:
                    _verify(op, args, result)
                done += 1

        async with asyncio.TaskGroup() as group:
            for _ in range(CONCURRENCY):
                group.create_task(task())
        return done

    warm = arg_factory(op, seed + 7919)
    if b.warmup:
        await burst([warm(i) for i in range(b.warmup)], b.max_seconds + 30, verify=True)

    make = arg_factory(op, seed)
    arg_list = [make(i) for i in range(b.max_ops)]
    t0 = time.perf_counter()
    done = await burst(arg_list, b.max_seconds, verify=op == "stream")
    elapsed = time.perf_counter() - t0
    return {"ops": done, "seconds": elapsed, "ops_per_s": done / elapsed}


async def measure_memory(fn: Op, op: str, seed: int) -> dict[str, Any]:
    """Peak of Python-heap allocations (tracemalloc) while one call runs."""
    args = arg_factory(op, seed)(0)
    if op == "load_10k":  # not exercised by the timed steps: warm it up untraced
        _verify(op, args, await fn(*args))
    gc.collect()
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        result = await fn(*args)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _verify(op, args, result)
    return {"peak_bytes": peak, "traced_seconds": elapsed}


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
        for mode, op in spec["steps"]:
            b = budget(op, mode, spec["quick"])
            assert b is not None
            fn = getattr(system, op)
            measure = measure_latency if mode == "latency" else measure_throughput
            t0 = time.perf_counter()
            try:
                result = await measure(fn, op, b, spec["seed"])
            except Exception as exc:
                emit("step", mode=mode, op=op, error=error_text(exc))
                continue
            emit("step", mode=mode, op=op, wall=time.perf_counter() - t0, **result)
        if spec["memory"]:
            for op in MEM_OPS:
                try:
                    result = await measure_memory(getattr(system, op), op, spec["seed"])
                except Exception as exc:
                    emit("memory", op=op, error=error_text(exc))
                    continue
                emit("memory", op=op, **result)
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

"""python -m benchmarks: run the workload on every system, interleaved, and report.

For each backend: create and seed the table, then for each repetition run every
system once, in order (A B C A B C ...), each in its own subprocess
(benchmarks.worker), resetting the table before each run. The first repetition of a
system also probes the stream's memory; a last, separate subprocess per system
probes the 10,000-row `await q`. Results go to --out as markdown, JSON and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report, systems, venv, workload
from .worker import MARK

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark apeewee against the raw drivers and other async ORMs.",
    )
    parser.add_argument("--backend", choices=[*workload.BACKENDS, "all"], default="all")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short budgets, 1 repetition, 20,000-row stream: a smoke run (< 2 min for all)",
    )
    parser.add_argument(
        "--systems",
        help=f"comma list from: {', '.join(systems.SYSTEMS)} (raw is always added)",
    )
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument(
        "--with-peewee-async",
        action="store_true",
        help="also run peewee-async, in its own venv (.bench-venv-peewee-async/, made once)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--seed", type=int, default=1, help="seed of the operation arguments")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    names = (
        [n.strip() for n in args.systems.split(",") if n.strip()]
        if args.systems
        else list(systems.DEFAULT_SYSTEMS)
    )
    unknown = [n for n in names if n not in systems.SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s): {', '.join(unknown)}")
    if args.with_peewee_async and "peewee-async" not in names:
        names.append("peewee-async")
    args.names = ["raw"] + [n for n in dict.fromkeys(names) if n != "raw"]
    return args


class Progress:
    """One stderr line per finished step: [done/total elapsed] what result."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.lock = threading.Lock()

    def line(self, text: str, advance: int = 1) -> None:
        with self.lock:
            self.done += advance
            minutes, seconds = divmod(int(time.monotonic() - self.start), 60)
            width = len(str(self.total))
            print(
                f"[{self.done:>{width}}/{self.total} {minutes}:{seconds:02d}] {text}",
                file=sys.stderr,
                flush=True,
            )

    def note(self, text: str) -> None:
        with self.lock:
            print(f"  {text}", file=sys.stderr, flush=True)


def run_worker(
    python: Path | str, spec: dict[str, Any], timeout: float, on_event: Callable[[dict], None]
) -> tuple[bool, str]:
    """Run one worker subprocess; feed its events to on_event. Returns (finished, stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [str(python), "-m", "benchmarks.worker", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        finished = False
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(MARK):
                    event = json.loads(line[len(MARK) :])
                    finished = finished or event["event"] in ("done", "skip", "fatal")
                    on_event(event)
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    if not finished:
        how = "timed out" if proc.returncode == -9 else f"exited with {proc.returncode}"
        stderr = f"worker {how}\n{stderr}"
    return finished, stderr


def fmt_event(event: dict[str, Any]) -> str:
    if event.get("error"):
        return "ERROR " + event["error"]
    if "median_us" in event:
        return report.fmt_us(event["median_us"])
    if "ops_per_s" in event:
        return f"{report.fmt_rate(event['ops_per_s'])} ops/s"
    if "peak_bytes" in event:
        return f"{event['peak_bytes'] / 2**20:.1f} MiB peak RSS growth"
    return ""


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.steps = workload.steps(args.quick)
        self.backends = list(workload.BACKENDS) if args.backend == "all" else [args.backend]
        per_backend = args.reps * len(args.names) * len(self.steps) + len(args.names)
        self.progress = Progress(len(self.backends) * per_backend)
        self.pythons: dict[str, Path | str] = {n: sys.executable for n in args.names}
        self.unavailable: dict[str, str] = {}
        self.results = report.new_results(args, self.backends, self.steps)

    def prepare_peewee_async(self) -> None:
        if "peewee-async" not in self.args.names:
            return
        if not self.args.with_peewee_async:
            self.unavailable["peewee-async"] = "needs --with-peewee-async (separate venv)"
            return
        python, reason = venv.ensure(ROOT, self.progress.note)
        if python is None:
            self.unavailable["peewee-async"] = reason
        else:
            self.pythons["peewee-async"] = python

    def run(self) -> dict[str, Any]:
        self.prepare_peewee_async()
        if self.args.loop == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                self.progress.note("uvloop is not installed: workers use the asyncio loop")
        for backend in self.backends:
            self.run_backend(backend)
        self.results["meta"]["seconds"] = round(time.monotonic() - self.progress.start, 1)
        return self.results

    def run_backend(self, backend: str) -> None:
        args, progress = self.args, self.progress
        per_system = args.reps * len(self.steps) + 1
        tmp = Path(tempfile.mkdtemp(prefix="apeewee-bench-"))
        info = workload.connection_info(backend, str(tmp / "bench.db"))
        try:
            try:
                server = asyncio.run(asyncio.wait_for(workload.prepare(info), 300))
                self.results["servers"][backend] = server
            except Exception as exc:
                reason = f"cannot prepare {backend}: {type(exc).__name__}: {exc}"
                self.results["backend_errors"][backend] = reason
                progress.line(f"{backend} skipped: {reason}", per_system * len(args.names))
                return
            skipped = self.results["skipped"].setdefault(backend, {})
            for name, reason in self.unavailable.items():
                skipped[name] = reason
                progress.line(f"{backend} {name} skipped: {reason}", per_system)
            for rep in range(args.reps):
                for name in args.names:
                    if name in skipped:
                        continue
                    asyncio.run(workload.reset(info))
                    self.run_timing(backend, info, name, rep, skipped)
            self.run_load_probes(backend, info, skipped)
        finally:
            try:
                asyncio.run(workload.drop(info))
            except Exception as exc:
                progress.note(f"could not drop the {backend} table: {exc}")
            shutil.rmtree(tmp, ignore_errors=True)

    def spec(self, name: str, info: dict, steps: list, memory: list) -> dict[str, Any]:
        return {
            "system": name,
            "info": info,
            "steps": steps,
            "memory": memory,
            "quick": self.args.quick,
            "seed": self.args.seed,
            "loop": self.args.loop,
        }

    def run_timing(self, backend: str, info: dict, name: str, rep: int, skipped: dict) -> None:
        progress, results = self.progress, self.results
        pending = {tuple(s) for s in self.steps}
        writes: dict[str, Any] = {}
        label = f"{backend} {name}"

        def on_event(event: dict[str, Any]) -> None:
            kind = event["event"]
            if kind == "skip":  # no later repetitions, no memory probe either
                skipped[name] = event["reason"]
                later = (self.args.reps - rep - 1) * len(self.steps)
                progress.line(f"{label} skipped: {event['reason']}", len(pending) + later + 1)
                pending.clear()
            elif kind == "hello":
                results["info"].setdefault(backend, {})[name] = {
                    k: event[k] for k in ("versions", "python", "loop", "stream_note")
                }
            elif kind == "step":
                pending.discard((event["mode"], event["op"]))
                results["runs"].append({"backend": backend, "system": name, "rep": rep, **event})
                progress.line(f"{label} {event['mode']} {event['op']} {fmt_event(event)}")
            elif kind == "memory":
                results["memory"].append({"backend": backend, "system": name, **event})
                progress.note(f"{label} memory {event['op']}: {fmt_event(event)}")
            elif kind == "writes":
                writes.update(event)
            elif kind == "fatal":
                results["errors"].append(
                    {"backend": backend, "system": name, "rep": rep, "error": event["error"]}
                )

        memory = ["stream"] if rep == 0 else []
        timeout = (90 if self.args.quick else 900) + 60
        finished, stderr = run_worker(
            self.pythons[name], self.spec(name, info, self.steps, memory), timeout, on_event
        )
        if pending:  # fatal error, crash or timeout: account for the steps not run
            error = next((e["error"] for e in reversed(results["errors"]) if e["system"] == name), None)
            if not finished or error is None:
                error = stderr.strip().splitlines()[-1] if stderr.strip() else "worker failed"
                results["errors"].append(
                    {"backend": backend, "system": name, "rep": rep, "error": error}
                )
            progress.line(f"{label} FAILED: {error}", len(pending))
            if stderr.strip():
                progress.note(stderr.strip().splitlines()[-1][:300])
        if writes and name not in skipped:
            self.check_writes(backend, info, name, rep, writes["inserted"], writes["exact"])

    def check_writes(
        self, backend: str, info: dict, name: str, rep: int, expected: int, exact: bool
    ) -> None:
        """Rows the completed insert/transaction calls reported must be in the table (at
        least that many when some call failed and may or may not have committed)."""
        found = asyncio.run(workload.count_added(info))
        if found < expected or (exact and found != expected):
            self.results["integrity"].append(
                {"backend": backend, "system": name, "rep": rep, "expected": expected, "found": found}
            )
            self.progress.note(
                f"!! {backend} {name}: {expected} rows inserted, {found} in the table afterwards"
            )

    def run_load_probes(self, backend: str, info: dict, skipped: dict) -> None:
        """The `await q` memory probes: a fresh process each; two at a time (memory is
        not disturbed by a neighbour the way timings are)."""
        names = [n for n in self.args.names if n not in skipped]
        progress, results = self.progress, self.results

        def probe(name: str) -> None:
            got: list[dict] = []
            spec = self.spec(name, info, [], ["load_10k"])
            _, stderr = run_worker(self.pythons[name], spec, 120 if self.args.quick else 600, got.append)
            memory = [e for e in got if e["event"] == "memory"]
            if memory:
                results["memory"].append({"backend": backend, "system": name, **memory[0]})
                text = fmt_event(memory[0])
            else:
                problem = next(
                    (e.get("error") or e.get("reason") for e in got if e["event"] in ("fatal", "skip")),
                    None,
                )
                text = "ERROR " + (problem or (stderr.strip().splitlines() or ["worker failed"])[-1])
                results["memory"].append(
                    {"backend": backend, "system": name, "op": "load_10k", "error": text[6:]}
                )
            progress.line(f"{backend} {name} memory load_10k {text}")

        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(probe, names))


def git_revision() -> str:
    """The commit being measured, "+dirty" when apeewee/ has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "apeewee"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = Runner(args)
    runner.results["meta"]["revision"] = git_revision()
    print(
        f"benchmarks: backends={','.join(runner.backends)} systems={','.join(args.names)} "
        f"reps={args.reps} {'quick' if args.quick else 'full'} loop={args.loop}",
        file=sys.stderr,
    )
    results = runner.run()
    results["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    label = args.backend + ("-quick" if args.quick else "")
    paths = report.write(results, args.out, label)
    print(report.markdown(results))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    problems = len(results["errors"]) + len(results["integrity"])
    problems += sum(1 for r in results["runs"] + results["memory"] if r.get("error"))
    if problems:
        print(f"{problems} problem(s): see the Errors section of the report", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

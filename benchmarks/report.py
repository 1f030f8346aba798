"""Aggregation and output: medians over repetitions, ratios to the raw floor, a
markdown report, the JSON dump and a PNG chart of the ratios."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import workload
from .workload import MEM_OPS, OPS


def new_results(args: Any, backends: list[str], steps: list) -> dict[str, Any]:
    return {
        "meta": {
            "profile": "quick" if args.quick else "full",
            "reps": args.reps,
            "loop": args.loop,
            "seed": args.seed,
            "backends": backends,
            "systems": args.names,
            "steps": [list(s) for s in steps],
            "pool_size": workload.POOL_SIZE,
            "concurrency": workload.CONCURRENCY,
            "rows": workload.N_ROWS,
            "stream_rows": workload.stream_rows(args.quick),
            "load_rows": workload.LOAD_ROWS,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "memory_method": (
                "peak RSS growth during one call in a fresh process "
                "(VmHWM reset via /proc/self/clear_refs; ru_maxrss elsewhere)"
            ),
        },
        "servers": {},
        "info": {},
        "runs": [],
        "memory": [],
        "skipped": {},
        "errors": [],
        "integrity": [],
        "backend_errors": {},
    }


# -- aggregation ----------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """{backend: {mode: {op: {system: {value, ratio, reps, min, max}}}, "memory": ...}}"""
    values: dict[tuple, list[float]] = defaultdict(list)
    for run in results["runs"]:
        if run.get("error"):
            continue
        value = run["median_us"] if run["mode"] == "latency" else run["ops_per_s"]
        values[(run["backend"], run["mode"], run["op"], run["system"])].append(value)

    summary: dict[str, Any] = {}
    for (backend, mode, op, system), vals in values.items():
        cell = {"value": statistics.median(vals), "reps": len(vals), "min": min(vals), "max": max(vals)}
        summary.setdefault(backend, {}).setdefault(mode, {}).setdefault(op, {})[system] = cell
    for modes in summary.values():
        for mode, ops in modes.items():
            for cells in ops.values():
                floor = cells.get("raw", {}).get("value")
                for cell in cells.values():
                    if not floor or not cell["value"]:
                        cell["ratio"] = None
                    elif mode == "latency":  # time per op relative to raw
                        cell["ratio"] = cell["value"] / floor
                    else:  # raw ops/s over system ops/s: also "cost relative to raw"
                        cell["ratio"] = floor / cell["value"]
    for mem in results["memory"]:
        if not mem.get("error"):
            backend_summary = summary.setdefault(mem["backend"], {})
            backend_summary.setdefault("memory", {}).setdefault(mem["op"], {})[mem["system"]] = {
                "value": mem["peak_bytes"]
            }
    return summary


# -- formatting -----------------------------------------------------------------------


def fmt_us(us: float) -> str:
    if us < 1_000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1_000_000:.2f} s"


def fmt_rate(ops: float) -> str:
    return f"{ops:,.0f}" if ops >= 100 else f"{ops:.2f}"


def _cell(mode: str, cell: dict[str, Any] | None, is_floor: bool) -> str:
    if cell is None:
        return "-"
    text = fmt_us(cell["value"]) if mode == "latency" else fmt_rate(cell["value"])
    if not is_floor and cell.get("ratio"):
        text += f" ({cell['ratio']:.2f}x)"
    return text


def _op_title(op: str, meta: dict[str, Any]) -> str:
    if op == "stream":
        return f"stream {meta['stream_rows'] // 1000}k"
    return op


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    summary = summarize(results)
    out = [
        f"# apeewee benchmarks ({meta['profile']})",
        "",
        f"{meta.get('finished', '')} · commit {meta.get('revision', '?')} · "
        f"{meta['reps']} repetition(s) · loop {meta['loop']} · "
        f"Python {meta['python']} · {meta['cpus']} CPUs · {meta['platform']} · "
        f"{meta.get('seconds', '?')} s",
        "",
        f"Table of {meta['rows']:,} rows; pool of {meta['pool_size']} connections; throughput "
        f"with {meta['concurrency']} concurrent tasks. Values are medians over repetitions. "
        "In parentheses: cost relative to the raw driver measured in the same run "
        "(latency ÷ raw latency; raw ops/s ÷ ops/s) — 1.00x is the floor, lower is better.",
        "",
    ]
    systems = meta["systems"]
    for backend in meta["backends"]:
        out.append(f"## {backend}")
        out.append("")
        if backend in results["backend_errors"]:
            out += [f"Not run: {results['backend_errors'][backend]}", ""]
            continue
        server = results.get("servers", {}).get(backend)
        if server:
            out += [f"Server: {server}", ""]
        data = summary.get(backend, {})
        shown = [s for s in systems if s not in results["skipped"].get(backend, {})]
        for mode, title in (
            ("latency", "Latency: median time per operation, one task"),
            (
                "throughput",
                "Throughput: operations per second, "
                f"{meta['concurrency']} tasks over a pool of {meta['pool_size']}",
            ),
        ):
            ops = [op for op in OPS if [mode, op] in meta["steps"]]
            out += [f"### {title}", ""]
            out.append("| system | " + " | ".join(_op_title(op, meta) for op in ops) + " |")
            out.append("|---|" + "---:|" * len(ops))
            for system in shown:
                cells = [
                    _cell(mode, data.get(mode, {}).get(op, {}).get(system), system == "raw")
                    for op in ops
                ]
                out.append(f"| {system} | " + " | ".join(cells) + " |")
            out.append("")
        out += [
            "### Memory: peak RSS growth during one call (MiB)",
            "",
            f"| system | stream {meta['stream_rows']:,} rows | await {meta['load_rows']:,} rows |",
            "|---|---:|---:|",
        ]
        for system in shown:
            cells = []
            for op in MEM_OPS:
                cell = data.get("memory", {}).get(op, {}).get(system)
                cells.append("-" if cell is None else f"{cell['value'] / 2**20:.1f}")
            out.append(f"| {system} | " + " | ".join(cells) + " |")
        out.append("")
        skipped = results["skipped"].get(backend, {})
        if skipped:
            out += ["Skipped: " + "; ".join(f"{s} ({r})" for s, r in skipped.items()), ""]

    out += _problems(results)
    out += _environment(results)
    return "\n".join(out).rstrip() + "\n"


def _problems(results: dict[str, Any]) -> list[str]:
    lines = []
    seen = set()
    for run in results["runs"] + results["memory"]:
        if run.get("error"):
            where = f"{run.get('mode', 'memory')} {run['op']}"
            key = (run["backend"], run["system"], where, run["error"])
            if key not in seen:
                seen.add(key)
                lines.append(f"- {run['backend']} {run['system']} {where}: {run['error']}")
    for err in results["errors"]:
        lines.append(f"- {err['backend']} {err['system']} (rep {err['rep']}): {err['error']}")
    for bad in results["integrity"]:
        lines.append(
            f"- {bad['backend']} {bad['system']} (rep {bad['rep']}): write check failed, "
            f"{bad['expected']} rows inserted but {bad['found']} in the table afterwards"
        )
    return ["## Errors", "", *lines, ""] if lines else []


def _environment(results: dict[str, Any]) -> list[str]:
    merged: dict[str, dict] = {}
    for per_backend in results["info"].values():
        for system, info in per_backend.items():
            merged.setdefault(system, info)
    if not merged:
        return []
    lines = ["## Systems", "", "| system | versions | loop | stream done with |", "|---|---|---|---|"]
    for system in results["meta"]["systems"]:
        if system in merged:
            info = merged[system]
            versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
            lines.append(f"| {system} | {versions} | {info['loop']} | {info['stream_note']} |")
    lines += ["", f"Memory: {results['meta']['memory_method']}.", ""]
    return lines


# -- files ----------------------------------------------------------------------------


def write(results: dict[str, Any], out: Path, label: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "summary": summarize(results)}
    md = out / f"{label}.md"
    md.write_text(markdown(results), encoding="utf-8")
    js = out / f"{label}.json"
    js.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    paths = [md, js]
    png = out / f"{label}.png"
    try:
        if chart(results, png):
            paths.append(png)
    except ImportError as exc:
        print(f"no chart: {exc}")
    return paths


def chart(results: dict[str, Any], path: Path) -> bool:
    """Grouped bars of xraw per operation: one panel per backend and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    meta, summary = results["meta"], results["summary"]
    backends = [b for b in meta["backends"] if b in summary]
    others = [s for s in meta["systems"] if s != "raw"]
    if not backends or not others:
        return False
    modes = ["latency", "throughput"]
    height = 3.6 * len(backends) + 0.6
    fig, axes = plt.subplots(len(backends), 2, figsize=(15, height), squeeze=False)
    ratio_label = FuncFormatter(lambda v, _: f"{v:g}x")
    colors = plt.get_cmap("tab10").colors
    width = 0.8 / len(others)
    for row, backend in enumerate(backends):
        for col, mode in enumerate(modes):
            ax = axes[row][col]
            ops = [op for op in OPS if [mode, op] in meta["steps"]]
            for k, system in enumerate(others):
                xs, ys = [], []
                for i, op in enumerate(ops):
                    cell = summary[backend].get(mode, {}).get(op, {}).get(system)
                    if cell and cell.get("ratio"):
                        xs.append(i + (k - (len(others) - 1) / 2) * width)
                        ys.append(cell["ratio"])
                ax.bar(xs, ys, width, label=system, color=colors[k % len(colors)])
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ratio_label)
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.set_xticks(range(len(ops)), [_op_title(op, meta) for op in ops], fontsize=8)
            ax.set_title(f"{backend} — {mode} (x raw, lower is better)", fontsize=10)
            ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(others), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


SUBJECT = "apeewee"
BACKEND_TITLES = {"postgres": "PostgreSQL", "mysql": "MySQL", "sqlite": "SQLite"}


def geo_mean(values: list[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def ratio_table(results: dict[str, Any]) -> str:
    """apeewee against the best peer of each operation: the ratios to raw, per backend
    and mode; the geometric mean over the operations is apeewee's, and the lowest of
    any single peer's (the README's table). Bold: apeewee at or below the best peer."""
    summary = results.get("summary") or summarize(results)
    meta = results["meta"]
    out = []
    for mode in ("latency", "throughput"):
        ops = [op for op in OPS if [mode, op] in meta["steps"]]
        out += [f"| {mode}, x raw | " + " | ".join(_op_title(op, meta) for op in ops)
                + " | geo. mean |", "|---|" + "---:|" * (len(ops) + 1)]
        for backend, data in summary.items():
            cells = data.get(mode, {})
            ours, best, best_by = [], [], []
            for op in ops:
                systems = cells.get(op, {})
                mine = systems.get(SUBJECT, {}).get("ratio")
                peers = [(c["ratio"], name) for name, c in systems.items()
                         if name not in ("raw", SUBJECT) and c.get("ratio")]
                peer = min(peers) if peers else (None, None)
                ours.append(mine)
                best.append(peer[0])
                best_by.append(peer[1])
            title = BACKEND_TITLES.get(backend, backend)

            def fmt(value: float | None, bold: bool = False) -> str:
                if value is None:
                    return "-"
                return f"**{value:.2f}**" if bold else f"{value:.2f}"

            out.append(f"| {title}: {SUBJECT} | " + " | ".join(
                fmt(v, bool(v and b and v <= b)) for v, b in zip(ours, best, strict=True))
                + f" | {fmt(geo_mean([v for v in ours if v]))} |")
            peer_means = []
            for name in {n for op in ops for n in cells.get(op, {})} - {"raw", SUBJECT}:
                ratios = [cells.get(op, {}).get(name, {}).get("ratio") for op in ops]
                if all(ratios):
                    peer_means.append((geo_mean(ratios), name))  # type: ignore[arg-type]
            best_mean = min(peer_means) if peer_means else (None, None)
            out.append(f"| {title}: best peer | " + " | ".join(
                f"{fmt(b)} ({n})" if b else "-" for b, n in zip(best, best_by, strict=True))
                + (f" | {fmt(best_mean[0])} ({best_mean[1]}) |" if best_mean[0] else " | - |"))
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Re-render the markdown and the chart of a results JSON file:
    python -m benchmarks.report benchmarks/results/all.json"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("json", type=Path)
    parser.add_argument("--ratios", action="store_true",
                        help="print only apeewee's ratios against the best peer (markdown)")
    args = parser.parse_args(argv)
    results = json.loads(args.json.read_text(encoding="utf-8"))
    if args.ratios:
        print(ratio_table(results))
        return 0
    results.pop("summary", None)
    for path in write(results, args.json.parent, args.json.stem):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

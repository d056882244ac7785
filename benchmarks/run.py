"""Benchmarks of every stage at scale, side by side with the seed's approach and DuckDB's own speed.

    .venv/bin/python -m benchmarks.run                      # 10k,100k,1M,10M lines; 1,7,30 days
    .venv/bin/python -m benchmarks.run --sizes 10k,100k --days 1 --formats csv

Each measurement runs in a fresh process (``benchmarks.measure``) so that its peak RSS is its
own; the end-to-end run is the real ``cli.py investigate`` in a subprocess, its peak RSS read
with ``os.wait4``. Ratios are always against a baseline measured in the same run, on the same
file, so they stay meaningful on a shared or slower machine. Results: ``results.json``,
``results.md`` and ``scaling.png`` in ``--out`` (default ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import psutil

from benchmarks import scale

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SIZE_SUFFIX = {"k": 1_000, "m": 1_000_000}
# Peak RSS of the seed's pandas scan grows about 0.3 GB per million lines here: above this size
# it is skipped by default rather than risk the memory of a shared machine.
SEED_PANDAS_MAX_LINES = 10_000_000
E2E_TARGET_S = 5.0


def parse_size(text: str) -> int:
    text = text.strip().lower()
    if text[-1:] in SIZE_SUFFIX:
        return int(float(text[:-1]) * SIZE_SUFFIX[text[-1]])
    return int(text)


def size_label(lines: int) -> str:
    if lines >= 1_000_000 and lines % 1_000_000 == 0:
        return f"{lines // 1_000_000}M"
    if lines >= 1_000 and lines % 1_000 == 0:
        return f"{lines // 1_000}k"
    return str(lines)


def progress(text: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)


def measure(stage: str, args: dict) -> dict:
    """Run one `benchmarks.measure` stage in a fresh process; its RESULT line as a dict."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.measure", stage, json.dumps(args)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"benchmark stage {stage} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def generate(kind: str, amount: int, fmt: str, data_dir: Path) -> Path:
    """A scaled file from `benchmarks.scale`, made in a child process: DuckDB's generation of
    10 M lines peaks at GBs, and a child forked by a big parent starts its ru_maxrss at the
    parent's peak, which would then show up in every measurement after it."""
    code = (f"from benchmarks import scale; from pathlib import Path; "
            f"print(scale.{kind}_file({amount}, {fmt!r}, data_dir=Path({str(data_dir)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"generating {kind} {amount} {fmt} failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def run_e2e(metrics: Path, logs: Path, events: Path, work: Path) -> dict:
    """The real CLI, offline analyst, auto-approved: wall time, peak RSS, per-node seconds."""
    home, out = work / "home", work / "out"
    env = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", "INCIDENT_GRAPH_MODEL"}}
    env["INCIDENT_GRAPH_HOME"] = str(home)
    cmd = [sys.executable, str(REPO / "cli.py"), "investigate", "--metrics", str(metrics), "--logs", str(logs),
           "--events", str(events), "--auto-approve", "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    arrivals = []  # (seconds since start, line): when each node's progress line appeared
    for line in proc.stdout:
        arrivals.append((time.perf_counter() - started, line.rstrip("\n")))
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"cli.py investigate exited {code}:\n{stderr[-3000:]}")
    pm = json.loads((out / "postmortem.json").read_text())
    nodes: dict[str, float] = {}
    for run in pm["metadata"].get("node_runs", []):
        nodes[run["node"]] = run["seconds"]  # a node listed twice keeps one value
    # The write node finishes after the postmortem is written: time it from the progress lines.
    approve_at = next((t for t, text in arrivals if text.startswith("[approve]")), None)
    write_at = next((t for t, text in arrivals if text.startswith("[write]")), None)
    investigate = [t for t, text in arrivals if text.startswith("[investigate")]
    first_line = arrivals[0][0] if arrivals else None
    return {
        "wall": wall,
        "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
        # CPU seconds of the CLI and the children it waited for: unlike wall time, barely
        # inflated when other processes share the cores.
        "cpu": usage.ru_utime + usage.ru_stime,
        "startup": first_line,  # interpreter, imports and graph build until the first line
        "nodes": nodes,
        "investigate": (investigate[-1] - investigate[0]) if len(investigate) > 1 else None,
        "write": (write_at - approve_at) if approve_at is not None and write_at is not None else None,
        "root_service": pm["root_cause"]["service"],
        "window": pm.get("incident_window"),
    }


def machine_notes() -> dict:
    load1, load5, _ = os.getloadavg()
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pandas": pd.__version__,
        "os": platform.platform(),
        "load_average_at_start": [round(load1, 2), round(load5, 2)],
    }


def file_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 1)


def run(sizes: list[int], days: list[int], formats: list[str], out_dir: Path, data_dir: Path,
        seed_pandas_max: int, e2e: bool) -> dict:
    notes = machine_notes()
    progress(f"machine: {notes['cpu']}, {notes['logical_cpus']} CPUs, load average {notes['load_average_at_start']}")
    generate("metrics", 1, formats[0], data_dir)  # writes the base scenario and its truth
    truth = scale.truth(data_dir=data_dir)
    results: dict = {"machine": notes,
                     "truth": {k: truth[k] for k in ("fault", "seed", "start", "end", "root_service", "services")},
                     "logs": [], "days": []}
    events = scale.events_file(data_dir=data_dir)
    with tempfile.TemporaryDirectory(prefix="incident-bench-") as tmp:
        work = Path(tmp)
        metrics_1d = {fmt: generate("metrics", 1, fmt, data_dir) for fmt in formats}
        for lines in sizes:
            label = size_label(lines)
            for fmt in formats:
                started = time.perf_counter()
                logs = generate("logs", lines, fmt, data_dir)
                row: dict = {"lines": lines, "format": fmt, "logs_mb": file_mb(logs),
                             "generate": time.perf_counter() - started}
                progress(f"{label} {fmt}: logs file {row['logs_mb']} MB ready ({row['generate']:.1f} s)")
                db = work / f"{label}-{fmt}.duckdb"
                common = {"metrics": str(metrics_1d[fmt]), "logs": str(logs), "events": str(events), "db": str(db)}
                row["load"] = measure("load", common)
                progress(f"{label} {fmt}: load {row['load']['load']:.2f} s, peak RSS {row['load']['peak_rss_mb']} MB")
                row["duckdb_load"] = measure("duckdb_load", {**common, "db": str(work / "floor.duckdb")})
                progress(f"{label} {fmt}: DuckDB read_{'csv' if fmt == 'csv' else 'parquet'} {row['duckdb_load']['duckdb_load']:.2f} s")
                row["tools"] = measure("tools", common)
                t = row["tools"]
                progress(f"{label} {fmt}: detect {t['detect']:.3f} s, log_pattern_scan {t['log_pattern_scan']:.3f} s "
                         f"(GROUP BY floor {t['floor_group_by']:.3f} s), onsets {t['service_error_onsets']:.3f} s, "
                         f"mining {t['distinct_masked_messages']} distinct in {t['mine_templates']:.3f} s")
                if fmt == "csv" and lines <= seed_pandas_max:
                    start, end = t["window"]
                    row["seed_scan"] = measure("seed_scan", {"logs": str(logs), "start": start, "end": end})
                    progress(f"{label} {fmt}: seed pandas scan {row['seed_scan']['seed_pandas_scan']:.2f} s, "
                             f"peak RSS {row['seed_scan']['peak_rss_mb']} MB")
                if e2e:
                    row["e2e"] = run_e2e(metrics_1d[fmt], logs, events, work / f"e2e-{label}-{fmt}")
                    progress(f"{label} {fmt}: end-to-end {row['e2e']['wall']:.2f} s, peak RSS "
                             f"{row['e2e']['peak_rss_mb']} MB, root {row['e2e']['root_service']}")
                db.unlink(missing_ok=True)
                results["logs"].append(row)
        smallest = generate("logs", min(sizes), formats[0], data_dir)
        for n_days in days:
            metrics = generate("metrics", n_days, formats[0], data_dir)
            db = work / f"days-{n_days}.duckdb"
            common = {"metrics": str(metrics), "logs": str(smallest), "events": str(events), "db": str(db)}
            loaded = measure("load", common)
            detectors = measure("detectors", common)
            results["days"].append({"days": n_days, "format": formats[0], "metrics_mb": file_mb(metrics),
                                    "load": loaded, "detectors": detectors})
            progress(f"{n_days} d metrics: {detectors['points']} points, detect {detectors['detect']:.3f} s, "
                     f"seed loop {detectors['seed_zscore_loop']:.2f} s")
            db.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / "results.md").write_text(markdown(results))
    plot(results, out_dir / "scaling.png")
    progress(f"wrote {out_dir / 'results.json'}, {out_dir / 'results.md'}, {out_dir / 'scaling.png'}")
    return results


# ----------------------------------------------------------------------------- reporting

def _s(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _x(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "–"
    return f"{value / base:.1f}x"


def markdown(results: dict) -> str:
    m = results["machine"]
    t = results["truth"]
    lines = [
        "# Benchmark results",
        "",
        (f"Made by `.venv/bin/python -m benchmarks.run` on {m['date_utc']}: {m['cpu']}, {m['logical_cpus']} logical CPUs, "
         f"{m['memory_gb']} GB RAM, Python {m['python']}, DuckDB {m['duckdb']}, pandas {m['pandas']}; load average at "
         f"start {m['load_average_at_start'][0]} (1 min) / {m['load_average_at_start'][1]} (5 min)."),
        "",
        (f"Scenario: `{t['fault']}` seed {t['seed']} scaled by `benchmarks/scale.py` (true window {t['start']} to "
         f"{t['end']}, root `{t['root_service']}`). Seconds are wall time; RSS is the measuring process's peak "
         "(interpreter and imports included). Ratios are against baselines measured in the same run on the same file."),
        "",
        "## Logs: every stage per size (24 h of per-minute metrics)",
        "",
        ("| lines | format | file MB | load s | load CPU s | DuckDB read s | load / DuckDB | load peak RSS MB | detect s | "
         "log_pattern_scan s | GROUP BY floor s | scan / floor | seed pandas scan s | seed / scan | seed peak RSS MB | "
         "onsets s | changes s | run_sql s | distinct masked | mining s |"),
        "|" + "---|" * 20,
    ]
    for r in results["logs"]:
        tl, ld, fl = r["tools"], r["load"], r["duckdb_load"]
        seed = r.get("seed_scan")
        cells = [
            size_label(r["lines"]), r["format"], r["logs_mb"], _s(ld["load"], 2), _s(ld.get("cpu"), 2), _s(fl["duckdb_load"], 2),
            _x(ld["load"], fl["duckdb_load"]), f"{ld['peak_rss_mb']:.0f}", _s(tl["detect"]), _s(tl["log_pattern_scan"]),
            _s(tl["floor_group_by"]), _x(tl["log_pattern_scan"], tl["floor_group_by"]),
            _s(seed["seed_pandas_scan"], 2) if seed else "not run",
            _x(seed["seed_pandas_scan"], tl["log_pattern_scan"]) if seed else "–",
            f"{seed['peak_rss_mb']:.0f}" if seed else "–",
            _s(tl["service_error_onsets"]), _s(tl["recent_changes"]), _s(tl["run_sql"]),
            tl["distinct_masked_messages"], _s(tl["mine_templates"]),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    e2e_rows = [r for r in results["logs"] if "e2e" in r]
    if e2e_rows:
        lines += [
            "",
            "## End to end (`cli.py investigate --auto-approve`, offline analyst, 24 h metrics)",
            "",
            ("| lines | format | wall s | CPU s | peak RSS MB | file MB | startup s | load s | detect s | investigate s | "
             "hypothesize + critic s | write s | root found | target < 5 s (24 h + 1 M lines) |"),
            "|" + "---|" * 14,
        ]
        for r in e2e_rows:
            e, nodes = r["e2e"], r["e2e"]["nodes"]
            hc = (nodes.get("hypothesize") or 0.0) + (nodes.get("critic") or 0.0)
            target = ""
            if r["lines"] == 1_000_000:
                target = f"{'met' if e['wall'] < E2E_TARGET_S else 'missed'} ({e['wall'] / E2E_TARGET_S:.2f}x of 5 s)"
            lines.append(
                f"| {size_label(r['lines'])} | {r['format']} | {_s(e['wall'], 2)} | {_s(e.get('cpu'), 2)} | {e['peak_rss_mb']:.0f} | {r['logs_mb']} | "
                f"{_s(e['startup'], 2)} | {_s(nodes.get('load'), 2)} | {_s(nodes.get('detect'))} | {_s(e['investigate'], 2)} | "
                f"{_s(hc)} | {_s(e['write'], 2)} | {'yes' if e['root_service'] == t['root_service'] else 'no: ' + str(e['root_service'])} | {target} |"
            )
        lines += ["", "| stage | target | result |", "|---|---|---|",
                  ("| server: first progress event after an investigation is started | < 1 s | "
                   "placeholder: measured by the server load test, not by this runner |")]
    if results["days"]:
        lines += [
            "",
            "## Metrics: detector vs the seed's rolling z-score loop (same series, same run)",
            "",
            "| days | points | file MB | load s | detect s | µs / point | seed loop s | seed / detect | detector window |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["days"]:
            d = r["detectors"]
            lines.append(
                f"| {r['days']} | {d['points']} | {r['metrics_mb']} | {_s(r['load']['load'], 2)} | {_s(d['detect'])} | "
                f"{d['detect'] / d['points'] * 1e6:.1f} | {_s(d['seed_zscore_loop'], 2)} | "
                f"{_x(d['seed_zscore_loop'], d['detect'])} | {d['window'][0]} to {d['window'][1]} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    colour = dict(zip(
        ["load", "DuckDB read (floor)", "log_pattern_scan", "GROUP BY (floor)", "end to end", "seed pandas scan",
         "load peak RSS", "end-to-end peak RSS", "file size MB", "seed pandas peak RSS"],
        [f"C{i}" for i in range(10)],
    ))
    style = {"csv": "-", "parquet": "--"}
    for fmt, marker in (("csv", "o"), ("parquet", "s")):
        rows = [r for r in results["logs"] if r["format"] == fmt]
        if not rows:
            continue
        x = [r["lines"] for r in rows]
        series = {
            "load": [r["load"]["load"] for r in rows],
            "DuckDB read (floor)": [r["duckdb_load"]["duckdb_load"] for r in rows],
            "log_pattern_scan": [r["tools"]["log_pattern_scan"] for r in rows],
            "GROUP BY (floor)": [r["tools"]["floor_group_by"] for r in rows],
        }
        if all("e2e" in r for r in rows):
            series["end to end"] = [r["e2e"]["wall"] for r in rows]
        seed = [(r["lines"], r["seed_scan"]["seed_pandas_scan"]) for r in rows if "seed_scan" in r]
        for name, values in series.items():
            ax_t.plot(x, values, marker=marker, linestyle=style[fmt], color=colour[name], label=f"{name} ({fmt})")
        if seed:
            ax_t.plot(*zip(*seed), marker=marker, linestyle=":", color=colour["seed pandas scan"],
                      label=f"seed pandas scan ({fmt})")
        memory = {"load peak RSS": [r["load"]["peak_rss_mb"] for r in rows], "file size MB": [r["logs_mb"] for r in rows]}
        if all("e2e" in r for r in rows):
            memory["end-to-end peak RSS"] = [r["e2e"]["peak_rss_mb"] for r in rows]
        for name, values in memory.items():
            ax_m.plot(x, values, marker=marker, linestyle=style[fmt], color=colour[name], label=f"{name} ({fmt})")
        seed_mem = [(r["lines"], r["seed_scan"]["peak_rss_mb"]) for r in rows if "seed_scan" in r]
        if seed_mem:
            ax_m.plot(*zip(*seed_mem), marker=marker, linestyle=":", color=colour["seed pandas peak RSS"],
                      label=f"seed pandas peak RSS ({fmt})")
    for ax, title, unit in ((ax_t, "time vs log lines", "seconds"), (ax_m, "memory vs log lines", "MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("log lines")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10k,100k,1M,10M", help="log lines per size, comma separated (k/M suffixes)")
    p.add_argument("--days", default="1,7,30", help="days of per-minute metrics for the detector comparison")
    p.add_argument("--formats", default="csv,parquet", help="csv, parquet or both")
    p.add_argument("--out", default=str(RESULTS_DIR), help="folder for results.json, results.md, scaling.png")
    p.add_argument("--data-dir", default=str(scale.DATA_DIR), help="cache of generated files (gitignored)")
    p.add_argument("--seed-pandas-max", default=size_label(SEED_PANDAS_MAX_LINES),
                   help="largest size the seed's whole-file pandas scan is run at (it needs ~0.3 GB per 1 M lines)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end CLI runs")
    args = p.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in scale.FORMATS]
    if bad:
        p.error(f"unknown format(s) {bad}; choose from {scale.FORMATS}")
    try:
        sizes = sorted(parse_size(s) for s in args.sizes.split(","))
        days = sorted(int(d) for d in args.days.split(",") if d.strip())
        seed_max = parse_size(args.seed_pandas_max)
    except ValueError as exc:
        p.error(str(exc))
    run(sizes, days, formats, Path(args.out), Path(args.data_dir), seed_max, not args.no_e2e)
    return 0


if __name__ == "__main__":
    sys.exit(main())

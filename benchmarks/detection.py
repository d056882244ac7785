"""Detector cost against the number of points: `python -m benchmarks.detection [--out DIR]`.

Three per-minute metrics with a daily cycle and one incident, at 10 k, 100 k and 1 M points.
The baseline, measured in the same run on the same series, is one centred rolling median of
the detector's own narrow width over one metric: the cheapest thing the detector must do, so
"x baseline" says what the rest costs, and a constant ratio says the detector is linear.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tools.detection import DetectorSettings, centred_median, detect_windows

SIZES = (10_000, 100_000, 1_000_000)
RESULTS = Path(__file__).resolve().parent / "results"


def series(points: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    season = np.cos(2 * np.pi * np.arange(points) / 1440)
    frame = pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=points, freq="min"),
        "rps": 1000 + 300 * season + rng.normal(0, 20, points),
        "p95_ms": 200 + 30 * season + rng.normal(0, 5, points),
        "error_rate": 0.01 + 0.002 * season + rng.normal(0, 0.001, points),
    })
    middle = points // 2
    frame.loc[middle : middle + 89, "p95_ms"] += 200
    return frame


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(points: int) -> dict:
    frame = series(points)
    width = int(DetectorSettings().baseline_minutes) | 1
    runs = 3 if points <= 100_000 else 1
    detect_s = best_of(runs, lambda: detect_windows(frame))
    baseline_s = best_of(runs, lambda: centred_median(frame["p95_ms"].to_numpy(), width))
    found = detect_windows(frame)
    return {"points": points, "detect_s": detect_s, "us_per_point": 1e6 * detect_s / points, "points_per_s": points / detect_s,
            "baseline_s": baseline_s, "x_baseline": detect_s / baseline_s, "windows": len(found.windows)}


def render(rows: list[dict]) -> str:
    lines = ["# Detector cost against the number of points", "", "Made by: `python -m benchmarks.detection`", "",
             "| points | detect_windows s | µs per point | points/s | one rolling median s | x baseline | windows found |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['points']:,} | {r['detect_s']:.3f} | {r['us_per_point']:.1f} | {r['points_per_s']:,.0f} | {r['baseline_s']:.4f} | "
              f"{r['x_baseline']:.1f}x | {r['windows']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for points in SIZES:
        print(f"{points:,} points ...", flush=True)
        rows.append(measure(points))
    text = render(rows)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detection.md").write_text(text, encoding="utf-8")
    (args.out / "detection.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""NAB harness: the product's window detector over a NAB-layout folder, scored as NAB scores it.

`python -m evals.nab [DATA_DIR] [--categories realKnownCause,realAWSCloudwatch] [--causal STRIDE] [--out DIR]`

DATA_DIR (default `<repo>/../shared/datasets/nab`) holds `data/<category>/<file>.csv`
(timestamp,value) and `combined_windows.json` (or `labels/combined_windows.json`), as NAB does.
Every file is one series; the detector sees it as a frame with `ts` and `value`. The output is
the NAB standard / reward_low_FP_rate / reward_low_FN_rate scores normalised on the files
scored, per category the window recall, detection precision and mean best IoU, and per file
the labelled windows, hits and false detections: Markdown and JSON in `--out`
(default `evals/out/nab/`), progress on stderr.

The product's detections are binary, so NAB's threshold sweep has nothing to choose: they are
scored at threshold 0.5. With `--causal STRIDE` the detector is re-run on the data up to row t
every STRIDE rows, and a window it reports for the first time counts as a detection at row t
(what an online detector could have flagged then), not at the window's start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evals import nab_scoring
from tools.detection import detect_windows

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "nab"
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "nab"
# The product's per-row scores are 0 or 1: any threshold in (0, 1] scores the same detections.
PRODUCT_THRESHOLD = 0.5


@dataclass(frozen=True)
class NabFile:
    """One NAB series: `name` is `<category>/<file>.csv`, `bounds` its labelled windows as rows."""

    name: str
    frame: pd.DataFrame
    bounds: list[tuple[int, int]]

    @property
    def category(self) -> str:
        return self.name.split("/")[0]


@dataclass(frozen=True)
class ReportedWindow:
    """A window the product reported, as file rows (inclusive), with its NAB anomaly score."""

    first: int
    last: int
    score: float


@dataclass(frozen=True)
class FileResult:
    """The product's per-row NAB scores and reported windows on one file."""

    file: NabFile
    scores: np.ndarray
    windows: list[ReportedWindow]
    seconds: float


def labels_path(data_dir: Path) -> Path:
    """NAB keeps its labels in `labels/combined_windows.json`; a trimmed copy may hold it at the top."""
    for path in (data_dir / "combined_windows.json", data_dir / "labels" / "combined_windows.json"):
        if path.is_file():
            return path
    raise FileNotFoundError(f"no combined_windows.json in {data_dir} or {data_dir / 'labels'}")


def read_series(path: Path) -> pd.DataFrame:
    """A NAB data file as the detector's frame: naive timestamps `ts` and one column `value`, in file order."""
    raw = pd.read_csv(path)
    return pd.DataFrame({"ts": pd.to_datetime(raw["timestamp"]), "value": raw["value"].astype("float64")})


def load_corpus(data_dir: Path, categories: Sequence[str] | None = None, progress: Callable[[str], None] = print) -> list[NabFile]:
    """Every labelled file of the chosen categories (all when None), sorted by name."""
    labels = json.loads(labels_path(data_dir).read_text(encoding="utf-8"))
    data_root = data_dir / "data" if (data_dir / "data").is_dir() else data_dir
    files = []
    for path in sorted(data_root.glob("*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        if categories and path.parent.name not in categories:
            continue
        if name not in labels:
            progress(f"skip {name}: not in the labels")
            continue
        frame = read_series(path)
        files.append(NabFile(name, frame, nab_scoring.window_bounds(frame["ts"], labels[name])))
    if not files:
        raise FileNotFoundError(f"no labelled NAB files under {data_root} for categories {list(categories or [])}")
    return files


def product_windows(frame: pd.DataFrame) -> list[ReportedWindow]:
    """THE adapter from the product's detector output to NAB: every incident window it reports
    (blips and routine excursions are not), as file rows, each with score 1.0: the detector's answer is yes or
    no, so NAB's threshold sweep has nothing to choose.

    Rows are matched on the detector's own grid (timestamps rounded to its step), so snapped or
    out-of-order timestamps still land in the window the detector meant.
    """
    detection = detect_windows(frame)
    grid = frame["ts"].dt.round(pd.Timedelta(seconds=detection.step_seconds)).to_numpy()
    order = np.argsort(grid, kind="stable")
    ordered = grid[order]
    windows = []
    for found in detection.windows:
        lo, hi = np.searchsorted(ordered, [np.datetime64(found.start), np.datetime64(found.end)])
        if hi > lo:
            rows = order[lo:hi]
            windows.append(ReportedWindow(int(rows.min()), int(rows.max()), 1.0))
    return windows


def product_scores(rows: int, windows: list[ReportedWindow]) -> np.ndarray:
    """NAB per-row anomaly scores: each window's score at its first row (where an alert fires), 0 elsewhere."""
    scores = np.zeros(rows)
    for window in windows:
        scores[window.first] = max(scores[window.first], window.score)
    return scores


def causal_detections(frame: pd.DataFrame, stride: int) -> tuple[np.ndarray, list[ReportedWindow]]:
    """Per-row scores and final windows of the detector run on the data up to row t, every `stride` rows.

    A reported window overlapping one reported before is the same window (its extent updated);
    a new one is a detection at row t. The first run is at the last probationary row: windows
    found there stand for detections made during probation, which NAB does not score.
    """
    rows = len(frame)
    steps = list(range(max(int(nab_scoring.probation_length(rows)) - 1, 0), rows, stride))
    if steps[-1] != rows - 1:
        steps.append(rows - 1)
    scores = np.zeros(rows)
    first = np.empty(0, dtype=int)
    last = np.empty(0, dtype=int)
    for t in steps:
        for window in product_windows(frame.iloc[: t + 1]):
            overlapping = (first <= window.last) & (last >= window.first)
            if not overlapping.any():
                scores[t] = max(scores[t], window.score)
            first = np.append(first[~overlapping], window.first)
            last = np.append(last[~overlapping], window.last)
    order = np.argsort(first)
    return scores, [ReportedWindow(int(f), int(lst), 1.0) for f, lst in zip(first[order], last[order])]


def run_file(file: NabFile, causal_stride: int | None) -> FileResult:
    """The product on one file, full-series or causal."""
    started = time.perf_counter()
    if causal_stride:
        scores, windows = causal_detections(file.frame, causal_stride)
    else:
        windows = product_windows(file.frame)
        scores = product_scores(len(file.frame), windows)
    return FileResult(file, scores, windows, time.perf_counter() - started)


def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Intersection over union of two inclusive row ranges."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def file_metrics(result: FileResult) -> dict:
    """Window-level view of one file: which labelled windows got a detection, where the rest fell.

    Detections are rows scoring >= PRODUCT_THRESHOLD after the probationary period (what NAB
    scores); IoU compares each labelled window with the best-overlapping reported window.
    """
    file, ts = result.file, result.file.frame["ts"]
    rows = np.arange(len(result.scores))
    detected = (result.scores >= PRODUCT_THRESHOLD) & (rows >= nab_scoring.probation_length(len(rows)))
    inside = np.zeros(len(rows), dtype=bool)
    hits, best_iou, missed = [], [], []
    for first, last in file.bounds:
        inside[first : last + 1] = True
        hit = bool(detected[first : last + 1].any())
        hits.append(hit)
        best_iou.append(max((iou((first, last), (w.first, w.last)) for w in result.windows), default=0.0))
        if not hit:
            missed.append(f"{ts[first]} .. {ts[last]}")
    false_rows = np.flatnonzero(detected & ~inside)
    return {
        "file": file.name,
        "category": file.category,
        "rows": len(rows),
        "labelled_windows": len(file.bounds),
        "hits": sum(hits),
        "detections": int(detected.sum()),
        "detections_inside": int((detected & inside).sum()),
        "false_detections": len(false_rows),
        "reported_windows": len(result.windows),
        "best_iou": best_iou,
        "missed_windows": missed,
        "false_detection_times": [str(ts[i]) for i in false_rows],
        "nab_standard_raw": nab_scoring.score(scored([result]), nab_scoring.PROFILES["standard"], PRODUCT_THRESHOLD).raw,
        "seconds": round(result.seconds, 3),
    }


def scored(results: Sequence[FileResult]) -> nab_scoring.ScoredRows:
    """The NAB rows of several files as one corpus."""
    parts, offset = [], 0
    for r in results:
        parts.append(nab_scoring.scored_rows(r.scores, r.file.bounds, offset))
        offset += len(r.file.bounds)
    return nab_scoring.combine(parts)


def nab_scores(results: Sequence[FileResult]) -> dict[str, float | None]:
    """Normalised NAB score per profile on these files at PRODUCT_THRESHOLD (None without windows:
    NAB's normalisation divides by the number of windows)."""
    rows = scored(results)
    if not rows.windows:
        return dict.fromkeys(nab_scoring.PROFILES)
    return {name: nab_scoring.score(rows, profile, PRODUCT_THRESHOLD).normalised for name, profile in nab_scoring.PROFILES.items()}


def category_summary(category: str, results: Sequence[FileResult], metrics: Sequence[dict]) -> dict:
    """Recall, precision and IoU over a category's files (None where undefined)."""
    windows = sum(m["labelled_windows"] for m in metrics)
    detections = sum(m["detections"] for m in metrics)
    ious = [v for m in metrics for v in m["best_iou"]]
    return {
        "category": category,
        "files": len(metrics),
        "labelled_windows": windows,
        "hits": sum(m["hits"] for m in metrics),
        "window_recall": sum(m["hits"] for m in metrics) / windows if windows else None,
        "detections": detections,
        "precision": sum(m["detections_inside"] for m in metrics) / detections if detections else None,
        "mean_best_iou": float(np.mean(ious)) if ious else None,
        "nab": nab_scores(results),
    }


def summarise(results: Sequence[FileResult], metrics: Sequence[dict], data_dir: Path, causal_stride: int | None, seconds: float) -> dict:
    """Everything the report shows, JSON-ready (`metrics` are the files' `file_metrics`)."""
    categories = sorted({r.file.category for r in results})
    return {
        "data_dir": str(data_dir),
        "mode": f"causal, detector re-run every {causal_stride} rows" if causal_stride else "full series (the detector sees each whole file)",
        "threshold": PRODUCT_THRESHOLD,
        "seconds": round(seconds, 1),
        "files": len(results),
        "labelled_windows": sum(len(r.file.bounds) for r in results),
        "nab": nab_scores(results),
        "categories": [category_summary(c, [r for r in results if r.file.category == c], [m for m in metrics if m["category"] == c]) for c in categories],
        "per_file": list(metrics),
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    """A number for the tables ('-' when undefined; + 0.0 turns NAB's -0.0 for a file without windows into 0.0)."""
    return "-" if value is None else f"{value + 0.0:.{digits}f}"


def render_markdown(summary: dict, command: str) -> str:
    """The report a developer reads: scores, per-category window metrics, per-file failures."""
    profiles = list(nab_scoring.PROFILES)
    lines = [
        "# NAB: the product's detector",
        "",
        f"`{command}`: {summary['files']} files, {summary['labelled_windows']} labelled windows, {summary['mode']}, {summary['seconds']} s. "
        f"The detections are binary (1.0 at the first row of each reported window), so they are scored at threshold "
        f"{summary['threshold']} rather than NAB's threshold sweep. Scores are normalised on the files scored.",
        "",
        "| scope | files | windows | " + " | ".join(profiles) + " |",
        "|---|---|---|" + "---|" * len(profiles),
        f"| all | {summary['files']} | {summary['labelled_windows']} | " + " | ".join(_fmt(summary["nab"][p]) for p in profiles) + " |",
    ]
    lines += [f"| {c['category']} | {c['files']} | {c['labelled_windows']} | " + " | ".join(_fmt(c["nab"][p]) for p in profiles) + " |" for c in summary["categories"]]
    lines += [
        "",
        "Window recall: labelled windows with a detection inside. Precision: detections inside a labelled window / all "
        "detections (after the probationary period). IoU: each labelled window against its best-overlapping reported window.",
        "",
        "| category | windows hit | window recall | detections | precision | mean best IoU |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['category']} | {c['hits']} / {c['labelled_windows']} | {_fmt(c['window_recall'], 2)} | {c['detections']} | {_fmt(c['precision'], 2)} | {_fmt(c['mean_best_iou'], 2)} |"
        for c in summary["categories"]
    ]
    lines += ["", "| file | labelled windows | hits | false detections | NAB standard raw | missed windows | s |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {m['file']} | {m['labelled_windows']} | {m['hits']} | {m['false_detections']} | {_fmt(m['nab_standard_raw'], 2)} | {'; '.join(m['missed_windows']) or '-'} | {m['seconds']} |"
        for m in summary["per_file"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.nab", description=__doc__.splitlines()[0])
    p.add_argument("data_dir", nargs="?", type=Path, default=DEFAULT_DATA, help=f"NAB-layout folder (default {DEFAULT_DATA})")
    p.add_argument("--categories", default=None, help="comma list of categories (default: all)")
    p.add_argument("--causal", type=int, default=None, metavar="STRIDE", help="re-run the detector on the data so far every STRIDE rows")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    if args.causal is not None and args.causal < 1:
        p.error("--causal STRIDE must be >= 1")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    categories = args.categories.split(",") if args.categories else None
    started = time.perf_counter()
    files = load_corpus(args.data_dir, categories, progress)
    results, metrics = [], []
    for i, file in enumerate(files, 1):
        result = run_file(file, args.causal)
        m = file_metrics(result)
        results.append(result)
        metrics.append(m)
        progress(f"[{i}/{len(files)}] {file.name}: {m['hits']}/{m['labelled_windows']} windows hit, {m['false_detections']} false detections, {result.seconds:.1f} s")
    summary = summarise(results, metrics, args.data_dir, args.causal, time.perf_counter() - started)
    command = "python -m evals.nab " + " ".join(argv if argv is not None else sys.argv[1:])
    markdown = render_markdown(summary, command)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"nab_causal{args.causal}" if args.causal else "nab"
    (args.out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(markdown)
    progress(f"report: {args.out / (stem + '.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Incident-window detection over all metric columns.

Robust statistics rather than a rolling z-score: a rolling mean/std drifts into a long
incident and only flags its first minutes. Here each metric gets a seasonal baseline (a wide
rolling median) that is re-estimated with the anomalous stretch masked out and bridged by
interpolation, so a 3-hour degradation cannot pull the baseline up with it. Residuals are
scaled by the MAD of the unmasked points. Per-minute badness is the worst directional z over
all metrics; the window is grown from strong cores (z >= `core_z`) out to where every metric
is back within `edge_z` (hysteresis), and stretches shorter than `min_minutes` are blips.
"""

from dataclasses import dataclass, field
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
from scipy import ndimage

Direction = Literal["up", "down", "both"]

# Recognised metric names and the direction that means "worse"; any other numeric column is a
# generic signal where both directions count.
KNOWN_DIRECTIONS: dict[str, Direction] = {
    "rps": "down",
    "p95_ms": "up",
    "error_rate": "up",
}


@dataclass(frozen=True)
class DetectorSettings:
    core_z: float = 6.0
    edge_z: float = 3.0
    min_minutes: float = 10.0
    bridge_minutes: int = 3
    merge_gap_minutes: int = 10
    baseline_minutes: int = 61
    wide_baseline_minutes: int = 481
    iterations: int = 4


@dataclass(frozen=True)
class SignalDeviation:
    metric: str
    direction: Direction
    baseline: float
    peak: float
    peak_z: float
    minutes_anomalous: int


@dataclass(frozen=True)
class WindowDetection:
    incident_detected: bool
    start: pd.Timestamp | None
    end: pd.Timestamp | None  # exclusive: the first minute that is normal again
    step_seconds: float
    signals: list[SignalDeviation] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    score: np.ndarray | None = None


def metric_direction(name: str) -> Direction:
    return KNOWN_DIRECTIONS.get(name.lower(), "both")


def regular_grid(metrics: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Put the metrics on a regular time grid (missing points become NaN).

    The step is the median spacing rounded to whole minutes (or seconds below a minute), and
    timestamps are snapped to it, so a scraper's few seconds of jitter loses no points.
    """
    frame = metrics.sort_values("ts")
    if len(frame) < 2:
        return frame.drop_duplicates("ts").set_index("ts"), 60.0
    median = frame["ts"].diff().median().total_seconds()
    step_s = 60.0 * round(median / 60.0) if median >= 60 else max(float(round(median)), 1.0)
    step = pd.Timedelta(seconds=step_s)
    snapped = frame.assign(ts=frame["ts"].dt.round(step)).groupby("ts").mean(numeric_only=True)
    grid = pd.date_range(snapped.index[0], snapped.index[-1], freq=step)
    return snapped.reindex(grid), step_s


def robust_z(
    values: np.ndarray, window_points: int, wide_points: int, iterations: int, mask_z: float
) -> np.ndarray:
    """Residual z-scores against a seasonal baseline re-fitted without the anomalous points.

    The first pass uses a wide median (wider than twice any plausible incident) so that a long
    degradation cannot become its own baseline; later passes use a narrower median, which
    follows seasonality closely, with the stretch flagged so far masked and bridged linearly.
    """
    series = pd.Series(values, dtype="float64")
    masked = series.copy()
    z = np.zeros(len(series))
    for iteration in range(iterations):
        width = wide_points if iteration == 0 else window_points
        filled = masked.interpolate(limit_direction="both")
        baseline = centred_median(filled, width)
        residual = series - baseline
        clean = residual[masked.notna()]
        mad = float(np.nanmedian(np.abs(clean - np.nanmedian(clean)))) if len(clean) else 0.0
        scale = max(1.4826 * mad, 1e-3 * float(np.nanmedian(np.abs(baseline))), 1e-12)
        z = (residual / scale).to_numpy()
        anomalous = np.abs(np.nan_to_num(z)) >= mask_z
        # Widen the mask so the shoulders of a ramp do not leak into the baseline.
        anomalous = ndimage.binary_dilation(anomalous, iterations=5)
        masked = series.mask(anomalous)
    return np.nan_to_num(z, nan=0.0)


def centred_median(series: pd.Series, width: int) -> pd.Series:
    """Centred rolling median with odd-reflected ends, so a slope at either end of the data is
    continued instead of flattened (a flattened end reads as an anomaly)."""
    pad = min(width // 2, len(series) - 1)
    values = series.to_numpy()
    head = 2 * values[0] - values[pad:0:-1]
    tail = 2 * values[-1] - values[-2 : -pad - 2 : -1]
    padded = pd.Series(np.concatenate([head, values, tail]))
    return pd.Series(padded.rolling(width, center=True, min_periods=1).median().to_numpy()[pad : pad + len(values)], index=series.index)


def directional(z: np.ndarray, direction: Direction) -> np.ndarray:
    if direction == "up":
        return np.clip(z, 0, None)
    if direction == "down":
        return np.clip(-z, 0, None)
    return np.abs(z)


METRICS_SQL = "SELECT * FROM metrics ORDER BY ts"


def metrics_frame(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every metric series in time order: what detection reads and the timeline chart shows.
    Read from the database where needed rather than carried in the state, so no checkpoint
    holds the series."""
    return con.execute(METRICS_SQL).df()


def detect_window(metrics: pd.DataFrame, settings: DetectorSettings = DetectorSettings()) -> WindowDetection:
    """Find the main incident window in a metrics frame (`ts` + numeric columns)."""
    frame, step_s = regular_grid(metrics)
    columns = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    if len(frame) < 10 or not columns:
        return WindowDetection(False, None, None, step_s)
    points_per_minute = 60.0 / step_s
    window_points = max(5, int(settings.baseline_minutes * points_per_minute) | 1)
    wide_points = max(window_points, int(settings.wide_baseline_minutes * points_per_minute) | 1)

    badness = {}
    zscores = {}
    for col in columns:
        z = robust_z(
            frame[col].to_numpy(dtype="float64"), window_points, wide_points, settings.iterations, settings.edge_z
        )
        zscores[col] = z
        badness[col] = directional(z, metric_direction(col))
    score = np.max(np.vstack(list(badness.values())), axis=0)

    bridge = max(1, int(round(settings.bridge_minutes * points_per_minute)))
    edge = ndimage.binary_closing(score >= settings.edge_z, structure=np.ones(bridge + 1), border_value=0)
    edge |= score >= settings.edge_z  # closing must never drop a flagged point at the borders
    merge = max(1, int(round(settings.merge_gap_minutes * points_per_minute)))
    labels, count = ndimage.label(edge)
    core = score >= settings.core_z

    candidates = []
    for label in range(1, count + 1):
        idx = np.flatnonzero(labels == label)
        if not core[idx].any():
            continue
        candidates.append([idx[0], idx[-1]])
    # Sawtooth faults (restarts) dip back to normal for a few minutes: join close stretches.
    merged: list[list[int]] = []
    for first, last in candidates:
        if merged and first - merged[-1][1] <= merge:
            merged[-1][1] = last
        else:
            merged.append([first, last])

    index = frame.index
    scored = []
    for first, last in merged:
        minutes = (last - first + 1) / points_per_minute
        severity = float(score[first : last + 1].sum())
        scored.append(
            {
                "start": index[first],
                "end": index[last] + pd.Timedelta(seconds=step_s),
                "minutes": minutes,
                "severity": severity,
                "first": first,
                "last": last,
                "is_blip": minutes < settings.min_minutes,
            }
        )
    incidents = [c for c in scored if not c["is_blip"]]
    if not incidents:
        return WindowDetection(False, None, None, step_s, candidates=_public(scored), score=score)
    best = max(incidents, key=lambda c: c["severity"])
    first, last = best["first"], best["last"]
    signals = []
    for col in columns:
        inside = badness[col][first : last + 1]
        flagged = int((inside >= settings.edge_z).sum())
        if flagged == 0:
            continue
        values = frame[col].to_numpy(dtype="float64")
        peak_at = first + int(np.argmax(inside))
        outside = np.concatenate([values[:first], values[last + 1 :]])
        signals.append(
            SignalDeviation(
                metric=col,
                direction=metric_direction(col),
                baseline=float(np.nanmedian(outside)) if np.isfinite(outside).any() else float("nan"),
                peak=float(values[peak_at]),
                peak_z=float(zscores[col][peak_at]),
                minutes_anomalous=int(round(flagged / points_per_minute)),
            )
        )
    signals.sort(key=lambda s: -abs(s.peak_z))
    return WindowDetection(True, best["start"], best["end"], step_s, signals, _public(scored), score)


def _public(candidates: list[dict]) -> list[dict]:
    return [
        {
            "start": c["start"].isoformat(),
            "end": c["end"].isoformat(),
            "minutes": round(c["minutes"], 1),
            "severity": round(c["severity"], 1),
            "is_blip": c["is_blip"],
        }
        for c in candidates
    ]

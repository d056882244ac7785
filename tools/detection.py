"""Incident windows over all metric columns: every one in the range, ranked by impact.

Robust statistics rather than a rolling z-score: a rolling mean/std drifts into a long
incident and only flags its first minutes. Each metric gets a baseline made of a slow trend (a
wide rolling median) plus, when the data covers at least two periods and the profile explains
part of the spread, a daily and a weekly profile (the median of each time-of-day / time-of-week
slot). The baseline is re-fitted with the anomalous stretches masked out and bridged, so a
3-hour degradation cannot pull it up with it; the mask is capped at a share of the series, so
it cannot run away and swallow everything. Residuals are scaled by their MAD, floored by the
data's own resolution (the quantum of a counter, the spread of the non-zero values of a mostly
idle one), never by an arbitrary epsilon.

Per-point badness is the worst directional z over all metrics. Windows grow from strong cores
(z >= `core_z`) out to where every metric is back within `edge_z` (hysteresis); stretches
shorter than `min_minutes` or `min_points` are blips. Each window's impact is its severity
(z-minutes, each point's z capped so one wild sample cannot outweigh an hour of degradation)
times the number of signals that deviated in it. A series the detector cannot judge (constant,
too short, all missing) is reported as such, never as a silent "no incident".
"""

from dataclasses import dataclass, field
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
from scipy import ndimage

from tools.times import naive_utc

Direction = Literal["up", "down", "both"]

# Recognised metric names and the direction that means "worse"; any other numeric column is a
# generic signal where both directions count.
KNOWN_DIRECTIONS: dict[str, Direction] = {
    "rps": "down",
    "p95_ms": "up",
    "error_rate": "up",
}
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
# A profile needs this many samples per period to say anything about its shape.
MIN_SLOTS_PER_PERIOD = 12


@dataclass(frozen=True)
class DetectorSettings:
    core_z: float = 6.0
    edge_z: float = 3.0
    min_minutes: float = 10.0
    min_points: int = 2
    bridge_minutes: float = 3.0
    merge_gap_minutes: float = 10.0
    baseline_minutes: float = 61.0
    wide_baseline_minutes: float = 481.0
    baseline_min_points: int = 9
    level_shift_minutes: float = 481.0
    max_mask_share: float = 0.25
    seasonal_gain: float = 0.8
    severity_cap_z: float = 20.0
    iterations: int = 4
    surprise_z: float = 2.0
    surprise_points: int = 10
    surprise_minutes: float = 10.0


@dataclass(frozen=True)
class SeriesFit:
    """One metric's residual z-scores and what the fit had to do to get them."""

    z: np.ndarray
    periods: tuple[str, ...] = ()
    masked_share: float = 0.0
    note: str | None = None  # why the series could not be judged, or what the fit fell back to


@dataclass(frozen=True)
class SignalDeviation:
    metric: str
    direction: Direction
    baseline: float
    peak: float
    peak_z: float
    minutes_anomalous: float


@dataclass(frozen=True)
class FoundWindow:
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive: the first sample that is normal again
    points: int
    minutes: float
    severity: float
    impact: float
    peak_z: float
    surprise: float  # how far its worst stretch stands above the rest of the range, in its own standard deviations
    is_blip: bool  # too short to be an incident
    is_routine: bool  # no more unusual than the range's own excursions
    signals: list[SignalDeviation] = field(default_factory=list)

    @property
    def is_incident(self) -> bool:
        return not (self.is_blip or self.is_routine)


@dataclass(frozen=True)
class Detections:
    step_seconds: float
    windows: list[FoundWindow]  # incidents, highest impact first
    set_aside: list[FoundWindow]  # blips and routine excursions, highest impact first
    notes: dict[str, str]  # metric -> what the detector could not do with it, or fell back to
    score: np.ndarray | None = None
    requested: FoundWindow | None = None  # the operator's own START..END, described the same way

    @property
    def incident_detected(self) -> bool:
        return bool(self.windows)


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


def centred_median(values: np.ndarray, width: int) -> np.ndarray:
    """Centred rolling median with odd-reflected ends, so a slope at either end of the data is
    continued instead of flattened (a flattened end reads as an anomaly)."""
    pad = min(width // 2, len(values) - 1)
    head = 2 * values[0] - values[pad:0:-1]
    tail = 2 * values[-1] - values[-2 : -pad - 2 : -1]
    padded = pd.Series(np.concatenate([head, values, tail]))
    return padded.rolling(width, center=True, min_periods=1).median().to_numpy()[pad : pad + len(values)]


def slot_profiles(values: np.ndarray, seconds: np.ndarray, period_s: float, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """For each sample, the median of its slot of the period (time of day, of week): over all
    the periods (the profile the baseline uses), and over the *other* half of them only (odd
    days for an even day, and back: the profile's honest test). O(n), two group-bys.

    The test must be out of sample: an in-sample median of a few samples is one of them, and a
    weekly profile over four weeks of pure noise "explains" a fifth of it. The baseline must be
    in sample: a median of the other two or three days is pulled by one bad day.
    """
    slot = ((seconds % period_s) // step_s).astype(np.int64)
    half = (seconds // period_s).astype(np.int64) % 2
    series = pd.Series(values)
    # Where no period has a slot (masked or missing every day), the neighbouring slots' median
    # stands in: a zero profile there would leave the whole cycle in its residual and keep it masked.
    slots = int(np.ceil(period_s / step_s))
    own = series.groupby(slot).median().reindex(range(slots)).interpolate(limit_direction="both").to_numpy()[slot]
    crossed = series.groupby([half, slot]).median().reindex(pd.MultiIndex.from_arrays([1 - half, slot])).to_numpy()
    return np.nan_to_num(own), np.nan_to_num(np.where(np.isnan(crossed), own, crossed))


# Level shifts are looked for only when the data holds this many of their windows.
SHIFT_SPANS = 4
# A part of the period needs this many residuals for a scale of its own.
MIN_SAMPLES_PER_PART = 30


def seasonal_scale(residual: np.ndarray, seconds: np.ndarray, period_s: float) -> np.ndarray:
    """The noise scale (1.4826 x MAD) of each twenty-fourth of the period (an hour of a day, seven
    hours of a week), over all its periods, spread back over every sample; NaN where a part has
    fewer than MIN_SAMPLES_PER_PART residuals (a MAD of five numbers is itself noise)."""
    part = ((seconds % period_s) // (period_s / 24)).astype(np.int64)
    frame = pd.DataFrame({"r": residual, "part": part})
    grouped = frame.groupby("part")["r"]
    centre = grouped.transform("median")
    scale = 1.4826 * (frame["r"] - centre).abs().groupby(frame["part"]).transform("median")
    return scale.where(grouped.transform("count") >= MIN_SAMPLES_PER_PART).to_numpy()


def resolution_floor(values: np.ndarray) -> float:
    """The smallest move that is not noise, whatever the MAD says: the quantum of a quantised
    series (a counter's 1, a percentage's 0.1); three thousandths of the series' own range (its 1st
    to 99th percentile), so a noise-free series is not alarmed by a rounding error; and for a
    mostly idle series (most values equal to the median) a tenth of the spread of the others."""
    finite = values[np.isfinite(values)]
    if len(finite) < 2:
        return 0.0
    distinct = np.unique(finite)
    quantum = float(np.min(np.diff(distinct))) if len(distinct) > 1 else 0.0
    low, high = np.quantile(finite, [0.01, 0.99])
    floor = max(quantum, 0.003 * float(high - low))
    centre = float(np.median(finite))
    active = finite[finite != centre]
    if len(active) * 2 >= len(finite) or len(active) < 2:
        return floor
    return max(floor, 0.1 * 1.4826 * float(np.median(np.abs(active - np.median(active)))))


def noise_spread(residual: np.ndarray, kept: np.ndarray) -> float | None:
    """1.4826 x the MAD of the kept residuals, without the exactly-zero ones: those are the
    samples a median was taken from (one of five days, the middle of a rolling window), which say
    nothing about the noise and would shrink it. None when fewer than ten residuals are left."""
    clean = residual[kept & (residual != 0) & np.isfinite(residual)]
    if len(clean) < 10:
        return None
    return 1.4826 * float(np.median(np.abs(clean - np.median(clean))))


def robust_z(values: np.ndarray, seconds: np.ndarray, step_s: float, settings: DetectorSettings = DetectorSettings()) -> SeriesFit:
    """Residual z-scores against a trend + seasonal baseline re-fitted without the anomalous points."""
    n = len(values)
    finite = np.isfinite(values)
    if finite.sum() < 10:
        return SeriesFit(np.zeros(n), note=f"only {int(finite.sum())} usable points")
    if np.nanmax(values) == np.nanmin(values):
        return SeriesFit(np.zeros(n), note="constant over the whole range")
    points_per_minute = 60.0 / step_s
    widest = max(3, n // 2) | 1  # no median window wider than half the data
    narrow = min(max(settings.baseline_min_points, int(settings.baseline_minutes * points_per_minute)) | 1, widest)
    wide = min(max(narrow, int(settings.wide_baseline_minutes * points_per_minute)) | 1, widest)
    span_s = float(seconds[-1] - seconds[0]) + step_s
    periods = [(name, p) for name, p in (("daily", DAY_S), ("weekly", WEEK_S)) if span_s >= 2 * p and p / step_s >= MIN_SLOTS_PER_PERIOD]
    first_width = min(max(wide, int(periods[0][1] / step_s) + 1 if periods else 0) | 1, widest)
    floor = resolution_floor(values)
    masked = ~finite
    seasonal = np.zeros(n)
    used: tuple[str, ...] = ()
    note = None
    z = np.zeros(n)
    for iteration in range(settings.iterations):
        kept = np.where(masked, np.nan, values - seasonal)
        filled = pd.Series(kept).interpolate(limit_direction="both").to_numpy()
        # First a wide median (wider than twice any plausible incident, and than a whole period
        # when there may be one, so the cycle is left for the profile), so a long degradation
        # cannot become its own baseline; then a narrow one on the deseasonalised data that
        # follows its shape, with what was flagged so far masked and bridged.
        trend = centred_median(filled, first_width if iteration == 0 else narrow)
        seasonal = np.zeros(n)
        # Which cycles the data has is decided once, against the first (wide) trend: a narrow
        # trend follows part of a cycle, and a choice that flips between passes never settles.
        for name, period in periods if iteration == 0 else [(name, p) for name, p in periods if name in used]:
            detrended = np.where(masked, np.nan, values - trend - seasonal)
            profile, held_out = slot_profiles(detrended, seconds, period, step_s)
            if iteration > 0:
                seasonal = seasonal + profile
                continue
            # Mean, not median, absolute deviations: a cycle that is low most of the day has a
            # median deviation of almost nothing, and its profile would look useless.
            before = np.nanmean(np.abs(detrended - np.nanmedian(detrended)))
            after = np.nanmean(np.abs(detrended - held_out - np.nanmedian(detrended - held_out)))
            if after < settings.seasonal_gain * before:
                seasonal, used = seasonal + profile, (*used, name)
        residual = values - trend - seasonal
        mad = noise_spread(residual, ~masked)
        if mad is None:  # nearly all residuals are exact medians: take them as they are
            clean = residual[~masked]
            mad = 1.4826 * float(np.median(np.abs(clean - np.median(clean))))
        scale = np.full(n, max(mad, floor, 1e-9 * float(np.nanmax(np.abs(values)))))
        if used:
            # Noise follows the cycle too (a busy afternoon is noisier than the night): with a
            # daily or weekly profile, each hour of it gets its own scale.
            # Never under half the overall scale: a quiet hour is quieter, not noise-free.
            hourly = seasonal_scale(np.where(~masked & (residual != 0), residual, np.nan), seconds, dict(periods)[used[0]])
            scale = np.maximum(np.nan_to_num(hourly, nan=scale[0]), 0.5 * scale[0])
        z = np.nan_to_num(residual / scale)
        # Widen the mask by about five minutes (one to five samples) so the shoulders of a ramp
        # do not leak into the baseline.
        flagged = ndimage.binary_dilation(np.abs(z) >= settings.edge_z, iterations=min(5, max(1, round(5 * points_per_minute))))
        if flagged.mean() > settings.max_mask_share:
            # Mask only the most extreme share: beyond it the baseline would be fitted on too little.
            threshold = float(np.quantile(np.abs(z), 1.0 - settings.max_mask_share))
            flagged = np.abs(z) >= max(threshold, settings.edge_z)
            note = f"deviations cover over {settings.max_mask_share:.0%} of the range: only the most extreme {settings.max_mask_share:.0%} were kept out of its baseline"
        masked = flagged | ~finite
    shift_window = int(settings.level_shift_minutes * points_per_minute) | 1
    if n >= SHIFT_SPANS * shift_window:
        z = _with_level_shifts(z, values, seasonal, masked, shift_window, floor)
    return SeriesFit(z, used, float(masked.mean()), note)


def _with_level_shifts(z: np.ndarray, values: np.ndarray, seasonal: np.ndarray, masked: np.ndarray, width: int, floor: float) -> np.ndarray:
    """`z`, or where larger, the deviation from the median of the `width` samples before each one.

    A centred median keeps a step's edge: a level that shifts and stays (a CPU that jumps from
    17% to 27% for days, a drift that builds over hours) becomes its own baseline at once and
    never stands out. Against what came before it does, for a window's length after the shift.
    """
    before = pd.Series(values - seasonal).interpolate(limit_direction="both").shift(1)
    residual = values - seasonal - before.rolling(width, min_periods=max(3, width // 4)).median().bfill().to_numpy()
    mad = noise_spread(residual, ~masked)
    if mad is None:
        return z
    shift_z = np.nan_to_num(residual / max(mad, floor, 1e-12))
    return np.where(np.abs(shift_z) > np.abs(z), shift_z, z)


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


def _stretches(score: np.ndarray, settings: DetectorSettings, points_per_minute: float) -> list[tuple[int, int]]:
    bridge = max(1, int(round(settings.bridge_minutes * points_per_minute)))
    edge = ndimage.binary_closing(score >= settings.edge_z, structure=np.ones(bridge + 1), border_value=0)
    edge |= score >= settings.edge_z  # closing must never drop a flagged point at the borders
    labels, _ = ndimage.label(edge)
    core = score >= settings.core_z
    spans = [(s[0].start, s[0].stop - 1) for s in ndimage.find_objects(labels)]
    spans = [(first, last) for first, last in spans if core[first : last + 1].any()]
    # Sawtooth faults (restarts) dip back to normal for a few minutes: join close stretches.
    merge = max(1, int(round(settings.merge_gap_minutes * points_per_minute)))
    merged: list[list[int]] = []
    for first, last in spans:
        if merged and first - merged[-1][1] <= merge:
            merged[-1][1] = last
        else:
            merged.append([first, last])
    return [(first, last) for first, last in merged]


def detect_windows(metrics: pd.DataFrame, settings: DetectorSettings = DetectorSettings(),
                   requested: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> Detections:
    """Every incident window in a metrics frame (`ts` + numeric columns), highest impact first;
    with `requested` (naive UTC, end exclusive), that range described as a window too."""
    frame, step_s = regular_grid(metrics)
    columns = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    if len(frame) < 10 or not columns:
        reason = f"{len(frame)} time points" if columns else "no numeric metric column"
        return Detections(step_s, [], [], {"*": f"nothing to judge: {reason}"})
    points_per_minute = 60.0 / step_s
    seconds = frame.index.as_unit("s").asi8.astype(np.float64)
    values = {col: frame[col].to_numpy(dtype="float64") for col in columns}
    fits = {col: robust_z(values[col], seconds, step_s, settings) for col in columns}
    notes = {col: fit.note for col, fit in fits.items() if fit.note}
    badness = {col: directional(fit.z, metric_direction(col)) for col, fit in fits.items()}
    score = np.max(np.vstack(list(badness.values())), axis=0)
    # How unusual a stretch is for this range: the mean badness over a short span (the most
    # unusual span in the stretch) against the mean and spread of the badness everywhere else.
    # Real series have excursions of their own (a nightly batch, a bursty counter); an incident
    # must stand out from them, not merely from the noise. Leaving the stretch out keeps a long
    # incident from raising its own bar.
    capped = np.minimum(score, settings.severity_cap_z)
    span = max(settings.surprise_points, int(round(settings.surprise_minutes * points_per_minute)))
    local = pd.Series(capped).rolling(span, center=True, min_periods=1).mean().to_numpy()
    total, squares, n = float(capped.sum()), float((capped * capped).sum()), len(capped)

    def surprise(first: int, last: int) -> float:
        inside = capped[first : last + 1]
        rest = n - len(inside)
        if rest < span:
            return float("inf")  # nothing else to compare with: the whole range deviates
        mean = (total - float(inside.sum())) / rest
        spread = np.sqrt(max((squares - float((inside * inside).sum())) / rest - mean * mean, 1e-12))
        return float((local[first : last + 1].max() - mean) / spread)

    def window(first: int, last: int) -> FoundWindow:
        points = last - first + 1
        minutes = points / points_per_minute
        signals = _signals(first, last, values, fits, badness, settings, points_per_minute)
        severity = float(np.minimum(score[first : last + 1], settings.severity_cap_z).sum()) / points_per_minute
        return FoundWindow(
            start=frame.index[first],
            end=frame.index[last] + pd.Timedelta(seconds=step_s),
            points=points,
            minutes=minutes,
            severity=severity,
            impact=severity * max(1, len(signals)),
            peak_z=float(score[first : last + 1].max()),
            surprise=(unusual := surprise(first, last)),
            is_blip=bool(minutes < settings.min_minutes or points < settings.min_points),
            is_routine=bool(unusual < settings.surprise_z),
            signals=signals,
        )

    ranked = sorted((window(first, last) for first, last in _stretches(score, settings, points_per_minute)), key=lambda w: -w.impact)
    chosen = None
    if requested is not None:
        first, stop = np.searchsorted(frame.index, requested[0]), np.searchsorted(frame.index, requested[1])
        if stop <= first:
            raise ValueError(f"window {requested[0].isoformat()}..{requested[1].isoformat()} holds no metric sample "
                             f"(the metrics run from {frame.index[0].isoformat()} to {frame.index[-1].isoformat()})")
        chosen = window(int(first), int(stop) - 1)
    return Detections(step_s, [w for w in ranked if w.is_incident], [w for w in ranked if not w.is_incident], notes, score, chosen)


def _signals(first: int, last: int, values: dict[str, np.ndarray], fits: dict[str, SeriesFit], badness: dict[str, np.ndarray],
             settings: DetectorSettings, points_per_minute: float) -> list[SignalDeviation]:
    """The metrics that left their baseline inside [first, last], strongest first: reached
    `core_z`, or stayed beyond `edge_z` for half the window. A metric that brushed `edge_z`
    for a few samples of a long window is noise, and naming it would be a false statement."""
    signals = []
    for col, bad in badness.items():
        inside = bad[first : last + 1]
        flagged = int((inside >= settings.edge_z).sum())
        if inside.max() < settings.core_z and flagged * 2 < len(inside):
            continue
        series = values[col]
        peak_at = first + int(np.argmax(inside))
        outside = np.concatenate([series[:first], series[last + 1 :]])
        signals.append(SignalDeviation(
            metric=col,
            direction=metric_direction(col),
            baseline=float(np.nanmedian(outside)) if np.isfinite(outside).any() else float("nan"),
            peak=float(series[peak_at]),
            peak_z=float(fits[col].z[peak_at]),
            minutes_anomalous=round(flagged / points_per_minute, 1),
        ))
    return sorted(signals, key=lambda s: -abs(s.peak_z))



def parse_window_choice(choice: str) -> int | tuple[pd.Timestamp, pd.Timestamp]:
    """`N` (a rank, 1 = highest impact) or `START..END` (two ISO 8601 instants, naive = UTC)."""
    text = choice.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError(f"window {choice!r}: ranks start at 1")
        return int(text)
    start, sep, end = text.partition("..")
    if not sep:
        raise ValueError(f"window {choice!r}: expected a rank (1, 2, ...) or START..END (ISO 8601)")
    try:
        first, last = naive_utc(start.strip()), naive_utc(end.strip())
    except ValueError as exc:
        raise ValueError(f"window {choice!r}: {exc}") from None
    if last <= first:
        raise ValueError(f"window {choice!r}: END must be after START")
    return first, last

"""NAB (Numenta Anomaly Benchmark) scoring, vectorised, as NAB's current scorer computes it.

Reproduces `nab/sweeper.py` at numenta/NAB commit ea702d75 (the scorer behind NAB's published
results), after Lavin & Ahmad 2015:

- Each row gets a weighted score from its position. Inside a labelled window of width W rows
  whose last row is R, row i is worth `A_TP * sigma(-(R - i + 1) / W) / sigma(-1)`, where
  `sigma(x) = 2 / (1 + exp(5x)) - 1` (and -1 beyond x > 3): a detection at the window's first
  row earns A_TP, one at its last row almost nothing. Outside windows a row is worth
  `A_FP * sigma(|i - R_prev| / (W_prev - 1))` relative to the end of the preceding window
  (-A_FP before the first window), so a detection just after a window costs little.
- The first `min(floor(0.15 n), 750)` rows of a file are probationary and not scored at all.
- At a threshold T the rows with anomaly score >= T are detections. A window that holds any
  detections counts the best of them, which is its earliest (later ones add nothing); a window
  with none costs A_FN. Every detection outside windows adds its (negative) weight.
- One threshold per detector and profile is chosen for the whole corpus: every distinct
  anomaly score (and 1.1, no detections) is a candidate, and the highest threshold among the
  best-scoring ones wins, as NAB's stable sort over descending thresholds picks it.
- Scores are normalised as 100 * (raw - null) / (perfect - null), where the null detector
  (no detections) scores -A_FN per window and the perfect one A_TP per window.

NAB's older scorer wrote per-row `S(t)_<profile>` columns that differ from these weights; this
module follows the current one.
"""

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

PROBATION_PERCENT = 0.15
# NAB caps the probationary period at 15% of 5000 rows (`Sweeper._getProbationaryLength`).
PROBATION_CAP_ROWS = PROBATION_PERCENT * 5000
# The threshold NAB starts its sweep at: above every anomaly score, so nothing is detected.
NO_DETECTION_THRESHOLD = 1.1


@dataclass(frozen=True)
class Profile:
    """NAB application profile (`config/profiles.json`); A_TN is 1 in all and never used."""

    tp: float
    fp: float
    fn: float


PROFILES: dict[str, Profile] = {
    "standard": Profile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile(tp=1.0, fp=0.11, fn=2.0),
}


@dataclass(frozen=True)
class ScoredRows:
    """The scorable (non-probationary) rows of one or more files, in file order.

    `window` is a corpus-unique window id per row (-1 outside windows); `position` is NAB's
    unweighted sigmoid value of the row; `windows` counts the windows that have scorable rows
    (only those can be missed).
    """

    anomaly: np.ndarray
    window: np.ndarray
    position: np.ndarray
    windows: int


@dataclass(frozen=True)
class Score:
    """A corpus score at one threshold: raw NAB score, its null/perfect bounds, normalised."""

    threshold: float
    raw: float
    null: float
    perfect: float

    @property
    def normalised(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def probation_length(rows: int) -> float:
    """Rows at the start of a file that NAB does not score (a detector's learning period)."""
    return min(math.floor(PROBATION_PERCENT * rows), PROBATION_CAP_ROWS)


def scaled_sigmoid(relative_position: np.ndarray) -> np.ndarray:
    """NAB's reward curve: about 0.987 at -1 (window start), 0 at 0 (window end), -1 beyond 3."""
    x = np.asarray(relative_position, dtype="float64")
    return np.where(x > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0)


def window_bounds(timestamps: pd.Series, windows: list[list[str]]) -> list[tuple[int, int]]:
    """Row indices (first, last) of each labelled window. NAB labels name exact timestamps of the
    file; the first row holding each timestamp is used, as NAB's `timestamps.index` does."""
    ts = pd.to_datetime(timestamps).to_numpy()
    bounds = []
    for start, end in windows:
        first = np.flatnonzero(ts == np.datetime64(pd.Timestamp(start)))
        last = np.flatnonzero(ts == np.datetime64(pd.Timestamp(end)))
        if not len(first) or not len(last):
            raise ValueError(f"window {start} .. {end} does not name timestamps of the file")
        bounds.append((int(first[0]), int(last[0])))
    return bounds


def row_positions(rows: int, bounds: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the index of its window in `bounds` (-1 outside) and NAB's unweighted score.

    Inside a window the value is sigma(-(R - i + 1) / W); after a window it is
    sigma(|i - R| / (W - 1)) for the preceding window; before the first window it is -1.
    """
    index = np.arange(rows)
    window = np.full(rows, -1)
    position = np.full(rows, -1.0)
    for k, (first, last) in enumerate(bounds):
        width = last - first + 1
        inside = slice(first, last + 1)
        window[inside] = k
        position[inside] = scaled_sigmoid(-(last - index[inside] + 1) / width)
        following_end = bounds[k + 1][0] if k + 1 < len(bounds) else rows
        after = slice(last + 1, following_end)
        # A one-row window would divide by zero; NAB's labels never have one.
        position[after] = scaled_sigmoid(np.abs(last - index[after]) / max(width - 1, 1))
    return window, position


def scored_rows(anomaly_scores: np.ndarray, bounds: list[tuple[int, int]], window_offset: int = 0) -> ScoredRows:
    """One file's scorable rows; `window_offset` keeps window ids unique across a corpus."""
    anomaly = np.asarray(anomaly_scores, dtype="float64")
    window, position = row_positions(len(anomaly), bounds)
    keep = np.arange(len(anomaly)) >= probation_length(len(anomaly))
    window = window[keep]
    window = np.where(window >= 0, window + window_offset, -1)
    return ScoredRows(anomaly[keep], window, position[keep], len(np.unique(window[window >= 0])))


def combine(files: list[ScoredRows]) -> ScoredRows:
    """The rows of several files as one corpus (their window ids must already be unique)."""
    return ScoredRows(
        np.concatenate([f.anomaly for f in files]),
        np.concatenate([f.window for f in files]),
        np.concatenate([f.position for f in files]),
        sum(f.windows for f in files),
    )


def sweep(rows: ScoredRows, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Raw NAB score at every candidate threshold, highest threshold first.

    Rows are taken in descending anomaly score; a false positive adds its weight, a true
    positive raises its window's value to the running maximum of its detections (from -A_FN).
    The score at a threshold is the running total after its last row.
    """
    order = np.argsort(-rows.anomaly, kind="stable")
    anomaly = rows.anomaly[order]
    window = rows.window[order]
    inside = window >= 0
    weight = np.where(inside, rows.position[order] * profile.tp / scaled_sigmoid(-1.0), rows.position[order] * profile.fp)

    false_positives = np.cumsum(np.where(inside, 0.0, weight))
    best = pd.Series(np.where(inside, weight, -profile.fn)).groupby(window).cummax().clip(lower=-profile.fn).to_numpy()
    previous = pd.Series(best).groupby(window).shift(1, fill_value=-profile.fn).to_numpy()
    windows_value = -profile.fn * rows.windows + np.cumsum(np.where(inside, best - previous, 0.0))

    last_of_each = np.flatnonzero(np.append(anomaly[1:] != anomaly[:-1], True))
    thresholds = np.concatenate([[NO_DETECTION_THRESHOLD], anomaly[last_of_each]])
    totals = np.concatenate([[-profile.fn * rows.windows], false_positives[last_of_each] + windows_value[last_of_each]])
    return thresholds, totals


def score(rows: ScoredRows, profile: Profile, threshold: float | None = None) -> Score:
    """The corpus score at `threshold` (rows >= it are detections), or at the best threshold."""
    thresholds, totals = sweep(rows, profile)
    at = int(np.argmax(totals)) if threshold is None else int(np.flatnonzero(thresholds >= threshold)[-1])
    return Score(
        threshold=float(thresholds[at] if threshold is None else threshold),
        raw=float(totals[at]),
        null=-profile.fn * rows.windows,
        perfect=profile.tp * rows.windows,
    )

"""Incident-window detection on synthetic per-minute metrics (seasonal baseline + noise).

The day's seasonality is a cosine, so each series starts and ends on a flat stretch of the
cycle (see `test_pure_seasonality_rising_at_the_series_start_is_not_an_incident` for why that
matters). Seeds are fixed, so every run sees the same numbers.
"""

import numpy as np
import pandas as pd
import pytest

from tools.detection import DetectorSettings, detect_window, metric_direction, regular_grid, robust_z

DAY = 1440
T0 = pd.Timestamp("2024-06-01 00:00:00")


def day_of_metrics(seed: int, n: int = DAY, columns=("rps", "p95_ms", "error_rate")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    season = np.cos(2 * np.pi * np.arange(n) / DAY)
    data = {"ts": pd.date_range(T0, periods=n, freq="min")}
    if "rps" in columns:
        data["rps"] = 1000 + 300 * season + rng.normal(0, 20, n)
    if "p95_ms" in columns:
        data["p95_ms"] = 200 + 30 * season + rng.normal(0, 5, n)
    if "error_rate" in columns:
        data["error_rate"] = 0.01 + 0.002 * season + rng.normal(0, 0.001, n)
    return pd.DataFrame(data)


def minute(i: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=i)


def minutes_off(a: pd.Timestamp, b: pd.Timestamp) -> float:
    return abs((a - b).total_seconds()) / 60.0


# --- the whole incident, not its first minutes -------------------------------------------------


def test_long_ramp_is_found_end_to_end():
    # A 144-minute degradation that keeps getting worse. A rolling z-score over the trailing
    # hour (mean/std, threshold 3) flags only ~8-12 of these 144 minutes on this very series,
    # because its own window absorbs the ramp; the masked robust baseline must not.
    df = day_of_metrics(seed=0)
    first, end = 600, 744  # [10:00, 12:24)
    df.loc[first : end - 1, "p95_ms"] += np.linspace(40, 400, end - first)
    df.loc[first : end - 1, "error_rate"] += np.linspace(0.005, 0.05, end - first)

    d = detect_window(df)

    assert d.incident_detected
    assert minutes_off(d.start, minute(first)) <= 3
    assert minutes_off(d.end, minute(end)) <= 3
    assert d.step_seconds == 60.0
    names = [s.metric for s in d.signals]
    assert {"p95_ms", "error_rate"} <= set(names)
    # Sorted by |peak_z|; the p95 signal is flagged for (almost) the whole ramp.
    assert [abs(s.peak_z) for s in d.signals] == sorted((abs(s.peak_z) for s in d.signals), reverse=True)
    p95 = next(s for s in d.signals if s.metric == "p95_ms")
    assert p95.direction == "up" and p95.peak_z > 6
    assert p95.minutes_anomalous >= 140
    assert p95.peak > p95.baseline + 300
    assert len(d.score) == DAY


def test_robust_z_does_not_let_the_ramp_become_its_own_baseline():
    df = day_of_metrics(seed=0)
    first, end = 600, 744
    df.loc[first : end - 1, "p95_ms"] += np.linspace(40, 400, end - first)

    z = robust_z(df["p95_ms"].to_numpy(), window_points=61, wide_points=481, iterations=4, mask_z=3.0)

    assert z.shape == (DAY,)
    assert np.isfinite(z).all()
    assert (z[first:end] >= 3).all()  # every ramp minute, including the last (largest) ones
    assert z[end - 10 : end].min() > 50
    outside = np.r_[z[: first - 5], z[end + 5 :]]
    assert np.abs(outside).mean() < 1.5


def test_step_incident_on_error_rate():
    df = day_of_metrics(seed=1)
    df.loc[700:759, "error_rate"] += 0.05  # [11:40, 12:40)

    d = detect_window(df)

    assert d.incident_detected
    assert minutes_off(d.start, minute(700)) <= 3
    assert minutes_off(d.end, minute(760)) <= 3
    top = d.signals[0]
    assert top.metric == "error_rate" and top.direction == "up" and top.peak_z > 6
    assert top.minutes_anomalous >= 55
    assert [c for c in d.candidates if not c["is_blip"]], "the window is also listed as a candidate"


# --- direction of badness -----------------------------------------------------------------------


def test_traffic_cliff_on_rps_only():
    df = day_of_metrics(seed=2)
    df.loc[500:559, "rps"] -= 500  # [08:20, 09:20)

    d = detect_window(df)

    assert d.incident_detected
    assert minutes_off(d.start, minute(500)) <= 3
    assert minutes_off(d.end, minute(560)) <= 3
    top = d.signals[0]
    assert top.metric == "rps" and top.direction == "down"
    assert top.peak_z < -6
    assert top.peak < top.baseline - 300


def test_rps_rise_is_not_an_incident():
    df = day_of_metrics(seed=2)
    df.loc[500:559, "rps"] += 500  # more traffic, everything else healthy

    d = detect_window(df)

    assert not d.incident_detected
    assert d.start is None and d.end is None


@pytest.mark.parametrize("shift", [+40.0, -40.0], ids=["rise", "drop"])
def test_generic_metric_counts_in_both_directions(shift):
    df = day_of_metrics(seed=2, columns=("rps",))
    rng = np.random.default_rng(102)
    df["queue_depth"] = 50 + 5 * np.cos(2 * np.pi * np.arange(DAY) / DAY) + rng.normal(0, 2, DAY)
    df.loc[500:559, "queue_depth"] += shift

    d = detect_window(df)

    assert d.incident_detected
    assert minutes_off(d.start, minute(500)) <= 3
    assert minutes_off(d.end, minute(560)) <= 3
    assert d.signals[0].metric == "queue_depth"
    assert d.signals[0].direction == "both"
    assert np.sign(d.signals[0].peak_z) == np.sign(shift)


def test_metric_direction_vocabulary():
    assert metric_direction("rps") == "down"
    assert metric_direction("P95_MS") == "up"
    assert metric_direction("error_rate") == "up"
    assert metric_direction("queue_depth") == "both"


# --- blips and hygiene --------------------------------------------------------------------------


def test_short_blips_only_are_not_an_incident():
    df = day_of_metrics(seed=3)
    blips = [(200, 2), (500, 3), (900, 4), (1200, 3)]  # far apart: never merged
    for first, length in blips:
        df.loc[first : first + length - 1, "error_rate"] += 0.05

    d = detect_window(df)

    assert not d.incident_detected
    assert d.start is None
    # They were seen (strong cores), and rejected as blips, not missed.
    assert len(d.candidates) == len(blips)
    assert all(c["is_blip"] for c in d.candidates)
    assert sorted(c["minutes"] for c in d.candidates) == [2.0, 3.0, 3.0, 4.0]


def test_nan_gaps_missing_stretch_and_shuffled_rows():
    df = day_of_metrics(seed=4)
    df.loc[700:759, "error_rate"] += 0.05
    rng = np.random.default_rng(4)
    for col in ("rps", "p95_ms", "error_rate"):
        df.loc[rng.choice(DAY, 80, replace=False), col] = np.nan
    df.loc[720:724, "error_rate"] = np.nan  # a hole inside the incident
    missing = list(range(300, 347)) + list(range(1000, 1003))  # rows that never arrived
    df = df.drop(index=missing).sample(frac=1, random_state=4)

    grid, step = regular_grid(df)
    assert step == 60.0
    assert len(grid) == DAY
    assert grid.index.is_monotonic_increasing
    assert grid.iloc[300:347].isna().all().all()
    assert grid.iloc[1000:1003].isna().all().all()

    d = detect_window(df)
    assert d.incident_detected
    assert minutes_off(d.start, minute(700)) <= 3
    assert minutes_off(d.end, minute(760)) <= 3
    assert np.isfinite(d.score).all()


def test_duplicate_timestamps_are_ignored():
    df = day_of_metrics(seed=5)
    df.loc[700:759, "error_rate"] += 0.05
    dup = pd.concat([df, df.iloc[::7]], ignore_index=True)

    grid, step = regular_grid(dup)
    assert step == 60.0
    assert len(grid) == DAY
    assert not grid.index.has_duplicates

    clean, doubled = detect_window(df), detect_window(dup)
    assert doubled.incident_detected
    assert (doubled.start, doubled.end) == (clean.start, clean.end)
    assert minutes_off(doubled.start, minute(700)) <= 3


def test_constant_metrics_neither_crash_nor_alarm():
    df = day_of_metrics(seed=6)
    df["replicas"] = 5.0  # MAD = 0 and non-zero baseline
    df["error_rate"] = 0.0  # MAD = 0 and zero baseline

    quiet = detect_window(df)
    assert not quiet.incident_detected
    assert quiet.candidates == []
    assert np.isfinite(quiet.score).all()

    df.loc[700:759, "p95_ms"] += 200
    d = detect_window(df)
    assert d.incident_detected
    assert minutes_off(d.start, minute(700)) <= 3
    names = {s.metric for s in d.signals}
    assert "p95_ms" in names
    assert not names & {"replicas", "error_rate"}

    for constant in (np.full(200, 5.0), np.zeros(200)):
        z = robust_z(constant, window_points=11, wide_points=41, iterations=4, mask_z=3.0)
        assert np.array_equal(z, np.zeros(200))


def test_too_short_or_non_numeric_frames():
    assert not detect_window(day_of_metrics(seed=0).iloc[:5]).incident_detected
    assert not detect_window(day_of_metrics(seed=0).iloc[:0]).incident_detected
    labels = pd.DataFrame({"ts": pd.date_range(T0, periods=50, freq="min"), "host": ["a"] * 50})
    d = detect_window(labels)
    assert not d.incident_detected and d.signals == []


def test_sub_minute_sampling_keeps_minutes_as_the_unit():
    n = 2 * DAY
    rng = np.random.default_rng(7)
    base = pd.DataFrame(
        {
            "ts": pd.date_range(T0, periods=n, freq="30s"),
            "p95_ms": 200 + 30 * np.cos(2 * np.pi * np.arange(n) / n) + rng.normal(0, 5, n),
        }
    )
    incident = base.copy()
    incident.loc[1000:1039, "p95_ms"] += 200  # 40 points = 20 minutes from 08:20
    d = detect_window(incident)
    assert d.step_seconds == 30.0
    assert d.incident_detected
    assert minutes_off(d.start, minute(500)) <= 3
    assert minutes_off(d.end, minute(520)) <= 3

    blip = base.copy()
    blip.loc[1000:1007, "p95_ms"] += 200  # 8 points = 4 minutes: a blip, not 8 "minutes"
    d = detect_window(blip)
    assert not d.incident_detected
    assert [c["minutes"] for c in d.candidates] == [4.0]


def test_settings_min_minutes_decides_what_is_a_blip():
    df = day_of_metrics(seed=3)
    df.loc[500:507, "error_rate"] += 0.05  # 8 minutes
    assert not detect_window(df).incident_detected
    assert detect_window(df, DetectorSettings(min_minutes=5)).incident_detected


def test_hundred_thousand_points():
    n = 100_000
    rng = np.random.default_rng(8)
    season = np.cos(2 * np.pi * np.arange(n) / DAY)
    df = pd.DataFrame(
        {
            "ts": pd.date_range(T0, periods=n, freq="min"),
            "rps": 1000 + 300 * season + rng.normal(0, 20, n),
            "p95_ms": 200 + 30 * season + rng.normal(0, 5, n),
        }
    )
    df.loc[50_000:50_089, "p95_ms"] += 200

    d = detect_window(df)

    assert d.incident_detected
    assert len(d.score) == n
    assert minutes_off(d.start, minute(50_000)) <= 3
    assert minutes_off(d.end, minute(50_090)) <= 3


# --- regressions of fixed weaknesses ---


def test_scrape_jitter_keeps_the_points():
    ts = pd.date_range(T0, periods=600, freq="min") + pd.to_timedelta(np.arange(600) % 3, unit="s")
    grid, step = regular_grid(pd.DataFrame({"ts": ts, "p95_ms": 200.0}))
    assert grid["p95_ms"].notna().sum() >= 590  # today: a 61 s grid that keeps 12 of 600 points
    assert step == 60.0


def test_pure_seasonality_rising_at_the_series_start_is_not_an_incident():
    t = np.arange(DAY)
    df = pd.DataFrame(
        {
            "ts": pd.date_range(T0, periods=DAY, freq="min"),
            "queue_depth": 1000 + 300 * np.sin(2 * np.pi * t / DAY) + np.random.default_rng(0).normal(0, 20, DAY),
        }
    )
    assert not detect_window(df).incident_detected

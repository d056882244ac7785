"""Incident-window detection on synthetic per-minute metrics (seasonal baseline + noise).

The day's seasonality is a cosine, so each series starts and ends on a flat stretch of the
cycle (see `test_pure_seasonality_rising_at_the_series_start_is_not_an_incident` for why that
matters). Seeds are fixed, so every run sees the same numbers.
"""

import numpy as np
import pandas as pd
import pytest

from tools.detection import DetectorSettings, detect_windows, metric_direction, parse_window_choice, regular_grid, robust_z

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

    d = detect_windows(df)

    assert d.incident_detected
    assert minutes_off(d.windows[0].start, minute(first)) <= 3
    assert minutes_off(d.windows[0].end, minute(end)) <= 3
    assert d.step_seconds == 60.0
    names = [s.metric for s in d.windows[0].signals]
    assert {"p95_ms", "error_rate"} <= set(names)
    # Sorted by |peak_z|; the p95 signal is flagged for (almost) the whole ramp.
    assert [abs(s.peak_z) for s in d.windows[0].signals] == sorted((abs(s.peak_z) for s in d.windows[0].signals), reverse=True)
    p95 = next(s for s in d.windows[0].signals if s.metric == "p95_ms")
    assert p95.direction == "up" and p95.peak_z > 6
    assert p95.minutes_anomalous >= 140
    assert p95.peak > p95.baseline + 300
    assert len(d.score) == DAY


def test_robust_z_does_not_let_the_ramp_become_its_own_baseline():
    df = day_of_metrics(seed=0)
    first, end = 600, 744
    df.loc[first : end - 1, "p95_ms"] += np.linspace(40, 400, end - first)

    seconds = (df["ts"].astype("int64") // 10**9).to_numpy().astype(float)
    z = robust_z(df["p95_ms"].to_numpy(), seconds, 60.0).z

    assert z.shape == (DAY,)
    assert np.isfinite(z).all()
    assert (z[first:end] >= 3).all()  # every ramp minute, including the last (largest) ones
    assert z[end - 10 : end].min() > 50
    outside = np.r_[z[: first - 5], z[end + 5 :]]
    assert np.abs(outside).mean() < 1.5


def test_step_incident_on_error_rate():
    df = day_of_metrics(seed=1)
    df.loc[700:759, "error_rate"] += 0.05  # [11:40, 12:40)

    d = detect_windows(df)

    assert d.incident_detected
    assert minutes_off(d.windows[0].start, minute(700)) <= 3
    assert minutes_off(d.windows[0].end, minute(760)) <= 3
    top = d.windows[0].signals[0]
    assert top.metric == "error_rate" and top.direction == "up" and top.peak_z > 6
    assert top.minutes_anomalous >= 55
    assert len(d.windows) == 1 and d.windows[0].is_blip is False and d.windows[0].is_routine is False, "one incident, its flags real bools"


# --- direction of badness -----------------------------------------------------------------------


def test_traffic_cliff_on_rps_only():
    df = day_of_metrics(seed=2)
    df.loc[500:559, "rps"] -= 500  # [08:20, 09:20)

    d = detect_windows(df)

    assert d.incident_detected
    assert minutes_off(d.windows[0].start, minute(500)) <= 3
    assert minutes_off(d.windows[0].end, minute(560)) <= 3
    top = d.windows[0].signals[0]
    assert top.metric == "rps" and top.direction == "down"
    assert top.peak_z < -6
    assert top.peak < top.baseline - 300


def test_rps_rise_is_not_an_incident():
    df = day_of_metrics(seed=2)
    df.loc[500:559, "rps"] += 500  # more traffic, everything else healthy

    d = detect_windows(df)

    assert not d.incident_detected
    assert d.windows == []


@pytest.mark.parametrize("shift", [+40.0, -40.0], ids=["rise", "drop"])
def test_generic_metric_counts_in_both_directions(shift):
    df = day_of_metrics(seed=2, columns=("rps",))
    rng = np.random.default_rng(102)
    df["queue_depth"] = 50 + 5 * np.cos(2 * np.pi * np.arange(DAY) / DAY) + rng.normal(0, 2, DAY)
    df.loc[500:559, "queue_depth"] += shift

    d = detect_windows(df)

    assert d.incident_detected
    assert minutes_off(d.windows[0].start, minute(500)) <= 3
    assert minutes_off(d.windows[0].end, minute(560)) <= 3
    assert d.windows[0].signals[0].metric == "queue_depth"
    assert d.windows[0].signals[0].direction == "both"
    assert np.sign(d.windows[0].signals[0].peak_z) == np.sign(shift)


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

    d = detect_windows(df)

    assert not d.incident_detected
    assert d.windows == []
    # They were seen (strong cores), and rejected as blips, not missed.
    assert len(d.set_aside) == len(blips)
    assert all(b.is_blip is True for b in d.set_aside)
    assert sorted(b.minutes for b in d.set_aside) == [2.0, 3.0, 3.0, 4.0]


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

    d = detect_windows(df)
    assert d.incident_detected
    assert minutes_off(d.windows[0].start, minute(700)) <= 3
    assert minutes_off(d.windows[0].end, minute(760)) <= 3
    assert np.isfinite(d.score).all()


def test_duplicate_timestamps_are_ignored():
    df = day_of_metrics(seed=5)
    df.loc[700:759, "error_rate"] += 0.05
    dup = pd.concat([df, df.iloc[::7]], ignore_index=True)

    grid, step = regular_grid(dup)
    assert step == 60.0
    assert len(grid) == DAY
    assert not grid.index.has_duplicates

    clean, doubled = detect_windows(df), detect_windows(dup)
    assert doubled.incident_detected
    assert (doubled.windows[0].start, doubled.windows[0].end) == (clean.windows[0].start, clean.windows[0].end)
    assert minutes_off(doubled.windows[0].start, minute(700)) <= 3


def test_constant_metrics_neither_crash_nor_alarm():
    df = day_of_metrics(seed=6)
    df["replicas"] = 5.0  # MAD = 0 and non-zero baseline
    df["error_rate"] = 0.0  # MAD = 0 and zero baseline

    quiet = detect_windows(df)
    assert not quiet.incident_detected
    assert quiet.windows == [] and quiet.set_aside == []
    assert quiet.notes == {"replicas": "constant over the whole range", "error_rate": "constant over the whole range"}
    assert np.isfinite(quiet.score).all()

    df.loc[700:759, "p95_ms"] += 200
    d = detect_windows(df)
    assert d.incident_detected
    assert minutes_off(d.windows[0].start, minute(700)) <= 3
    names = {s.metric for s in d.windows[0].signals}
    assert "p95_ms" in names
    assert not names & {"replicas", "error_rate"}

    for constant in (np.full(200, 5.0), np.zeros(200)):
        fit = robust_z(constant, np.arange(200) * 60.0, 60.0)
        assert np.array_equal(fit.z, np.zeros(200)) and fit.note == "constant over the whole range"


def test_too_short_or_non_numeric_frames():
    assert not detect_windows(day_of_metrics(seed=0).iloc[:5]).incident_detected
    assert not detect_windows(day_of_metrics(seed=0).iloc[:0]).incident_detected
    labels = pd.DataFrame({"ts": pd.date_range(T0, periods=50, freq="min"), "host": ["a"] * 50})
    d = detect_windows(labels)
    assert not d.incident_detected and d.notes == {"*": "nothing to judge: no numeric metric column"}


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
    d = detect_windows(incident)
    assert d.step_seconds == 30.0
    assert d.incident_detected
    assert minutes_off(d.windows[0].start, minute(500)) <= 3
    assert minutes_off(d.windows[0].end, minute(520)) <= 3

    blip = base.copy()
    blip.loc[1000:1007, "p95_ms"] += 200  # 8 points = 4 minutes: a blip, not 8 "minutes"
    d = detect_windows(blip)
    assert not d.incident_detected
    assert [b.minutes for b in d.set_aside] == [4.0]


def test_settings_min_minutes_decides_what_is_a_blip():
    df = day_of_metrics(seed=3)
    df.loc[500:507, "error_rate"] += 0.05  # 8 minutes
    assert not detect_windows(df).incident_detected
    assert detect_windows(df, DetectorSettings(min_minutes=5)).incident_detected


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

    d = detect_windows(df)

    assert d.incident_detected
    assert len(d.score) == n
    assert minutes_off(d.windows[0].start, minute(50_000)) <= 3
    assert minutes_off(d.windows[0].end, minute(50_090)) <= 3


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
    assert not detect_windows(df).incident_detected


# --- every window, ranked; real-data shapes (issue 15) -------------------------------------------


def test_every_incident_window_is_returned_ranked_by_impact():
    df = day_of_metrics(seed=9)
    df.loc[300:329, "error_rate"] += 0.05  # 30 min, one signal
    df.loc[900:989, "error_rate"] += 0.05  # 90 min, two signals: the bigger incident
    df.loc[900:989, "p95_ms"] += 150

    d = detect_windows(df)

    assert [minutes_off(w.start, minute(s)) <= 3 for w, s in zip(d.windows, (900, 300))] == [True, True]
    assert len(d.windows) == 2
    assert d.windows[0].impact > d.windows[1].impact
    assert {s.metric for s in d.windows[0].signals} == {"error_rate", "p95_ms"}
    assert [s.metric for s in d.windows[1].signals] == ["error_rate"]


def test_operator_range_is_described_like_a_found_window():
    df = day_of_metrics(seed=9)
    df.loc[900:989, "p95_ms"] += 150
    d = detect_windows(df, requested=(minute(880), minute(1000)))
    assert d.requested is not None
    assert (d.requested.start, d.requested.end) == (minute(880), minute(1000))
    assert [s.metric for s in d.requested.signals] == ["p95_ms"]
    with pytest.raises(ValueError, match="holds no metric sample"):
        detect_windows(df, requested=(minute(5000), minute(5100)))


@pytest.mark.parametrize("text, expected", [
    ("2", 2),
    ("2024-06-01T10:00:00Z..2024-06-01T12:00:00+01:00", (pd.Timestamp("2024-06-01 10:00"), pd.Timestamp("2024-06-01 11:00"))),
])
def test_window_choice_is_a_rank_or_a_range(text, expected):
    assert parse_window_choice(text) == expected


@pytest.mark.parametrize("text, message", [
    ("0", "ranks start at 1"), ("last", "expected a rank"), ("1.5", "expected a rank"),
    ("2024-06-02..2024-06-01", "END must be after START"), ("soon..later", "soon"),
])
def test_window_choice_errors_say_what_was_expected(text, message):
    with pytest.raises(ValueError, match=message):
        parse_window_choice(text)


def test_mask_is_bounded_and_says_so():
    # A series that is abnormal over most of its range: the old mask grew pass after pass until
    # it held every point, every z became 0 and the product said "no incident".
    rng = np.random.default_rng(11)
    values = rng.normal(100, 2, DAY)
    values[200:1300] += rng.choice([0, 60], 1100) + 40
    fit = robust_z(values, np.arange(DAY) * 60.0, 60.0)
    assert fit.masked_share <= DetectorSettings().max_mask_share + 0.01
    assert "most extreme" in fit.note
    assert np.abs(fit.z[200:1300]).mean() > 3, "the deviation is still seen"


def test_zero_heavy_counter_gets_a_scale_from_its_resolution():
    # A counter that is 0 most of the time and 1-3 now and then: MAD is 0; the old 1e-12 floor gave
    # z ~ 1e12 for every routine tick. One quantum is one unit of z at most here.
    rng = np.random.default_rng(12)
    counts = np.where(rng.random(DAY) < 0.05, rng.integers(1, 4, DAY), 0).astype(float)
    fit = robust_z(counts, np.arange(DAY) * 60.0, 60.0)
    assert np.abs(fit.z).max() <= 3.0 + 1e-9
    df = pd.DataFrame({"ts": pd.date_range(T0, periods=DAY, freq="min"), "retries": counts})
    assert not detect_windows(df).incident_detected
    df.loc[600:659, "retries"] += 40  # a real burst still stands out
    assert detect_windows(df).incident_detected


def test_daily_cycle_over_three_days_is_not_an_incident():
    # Hourly-sampled, a plateau every afternoon: a rolling median spanning a few samples reads the
    # plateau as a 10-hour incident; the daily profile knows it is normal.
    n = 24 * 5
    hours = np.arange(n)
    plateau = np.where((hours % 24 >= 9) & (hours % 24 < 19), 80.0, 20.0)
    df = pd.DataFrame({"ts": pd.date_range(T0, periods=n, freq="h"),
                       "load": plateau + np.random.default_rng(13).normal(0, 1, n)})
    d = detect_windows(df)
    assert d.step_seconds == 3600.0
    assert not d.incident_detected, [(w.start, w.minutes) for w in d.windows]
    df.loc[24 * 3 + 2 : 24 * 3 + 5, "load"] += 60  # the night of day 4 at daytime level: 4 hours
    d = detect_windows(df)
    assert d.incident_detected
    top = d.windows[0]
    assert minutes_off(top.start, T0 + pd.Timedelta(hours=24 * 3 + 2)) <= 120 and top.end >= T0 + pd.Timedelta(hours=24 * 3 + 6)


def test_excursions_routine_for_the_range_are_set_aside():
    # A bursty queue: sixty 20-minute bursts at 15 x its noise over three days (its normal life,
    # a quarter of the time). Each one is far beyond the noise, none stands out from the others:
    # all routine. One hour at 45 x stands out from them: the one incident.
    rng = np.random.default_rng(14)
    n = 3 * DAY
    values = rng.normal(50, 2, n)
    for start in rng.choice(np.arange(0, n - 60, 37), 60, replace=False):
        values[start : start + 20] += 30
    df = pd.DataFrame({"ts": pd.date_range(T0, periods=n, freq="min"), "queue_depth": values})

    quiet = detect_windows(df)
    assert quiet.windows == []
    routine = [w for w in quiet.set_aside if w.is_routine and not w.is_blip]
    assert len(routine) >= 20 and max(w.peak_z for w in routine) > DetectorSettings().core_z

    df.loc[2500:2559, "queue_depth"] = 50 + 90 + rng.normal(0, 2, 60)
    d = detect_windows(df)
    assert len(d.windows) == 1 and d.windows[0].start <= minute(2500) and d.windows[0].end >= minute(2560)  # with a burst it touches
    assert d.windows[0].surprise >= DetectorSettings().surprise_z > max(w.surprise for w in d.set_aside)


def test_a_level_that_shifts_and_stays_is_seen_against_what_came_before():
    # Six days at 5-minute steps: a CPU that jumps from 17% to 27% and stays there for two days
    # (noise 0.7), and a sag that builds over eight hours. A centred median keeps a step's edge
    # (the new level is its own baseline at once) and follows a slow drift; the median of the
    # hours before does neither.
    n = 6 * 288
    rng = np.random.default_rng(15)
    values = 17 + rng.normal(0, 0.7, n)
    values[2 * 288 : 4 * 288] += 10
    sag = np.r_[np.linspace(0, 12, 96), np.linspace(12, 0, 96)]
    values[5 * 288 - 192 : 5 * 288] -= sag
    df = pd.DataFrame({"ts": pd.date_range(T0, periods=n, freq="5min"), "cpu": values})

    d = detect_windows(df)

    starts = sorted(w.start for w in d.windows)
    shift, drift = T0 + pd.Timedelta(days=2), T0 + pd.Timedelta(days=5) - pd.Timedelta(hours=16)
    assert any(minutes_off(s, shift) <= 10 for s in starts), starts
    assert any(drift <= s < drift + pd.Timedelta(hours=8) for s in starts), starts
    blind = detect_windows(df, DetectorSettings(level_shift_minutes=1e9)).windows
    assert not any(minutes_off(w.start, shift) <= 10 for w in blind), "without the look back the shift is missed"

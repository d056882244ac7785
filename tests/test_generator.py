"""Tests for the synthetic scenario generator (evals/generator.py)."""

from __future__ import annotations

import dataclasses
import filecmp
import functools
import json
import re
import time

import numpy as np
import pandas as pd
import pytest

from evals.generator import FAULTS, Scenario, generate, write_scenario

REAL_FAULTS = tuple(f for f in FAULTS if f != "none")
SEEDS = (0, 1, 2)
BASE_METRICS = ("rps", "p95_ms", "error_rate")
METRIC_COLS = ("ts",) + BASE_METRICS
LOG_COLS = ("ts", "service", "level", "message", "endpoint", "latency_ms", "region", "trace_id")
EVENT_COLS = ("ts", "service", "kind", "description")
ISO_MINUTE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:00Z$")
ISO_SECOND = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MIN = pd.Timedelta(minutes=1)


@functools.cache
def scen(fault: str, seed: int) -> Scenario:
    return generate(fault, seed)


def window(sc: Scenario) -> tuple[pd.Timestamp, pd.Timestamp]:
    return pd.Timestamp(sc.truth["start"]), pd.Timestamp(sc.truth["end"])


def names(messages: pd.Series, service: str) -> pd.Series:
    """Messages that name ``service`` as a service (not as part of a path, topic or key)."""
    return messages.str.contains(rf"(?<![\w/.:-]){re.escape(service)}(?![\w/.:-])", regex=True)


def bad(logs: pd.DataFrame) -> pd.DataFrame:
    return logs[logs["level"].isin(["WARN", "ERROR"])]


def noise_sigma(x: np.ndarray) -> float:
    """Robust per-point noise sigma from first differences (immune to steps/diurnal)."""
    d = np.diff(x)
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2))


def zscores(metrics: pd.DataFrame) -> dict[str, np.ndarray]:
    """|x - trailing baseline| / sigma, baseline = median of minutes [t-40, t-10)."""
    out = {}
    for col in BASE_METRICS:
        x = metrics[col].to_numpy(float)
        s = noise_sigma(x)
        win = np.lib.stride_tricks.sliding_window_view(x, 30)  # win[i] = x[i:i+30]
        base = np.full(len(x), np.nan)
        base[40:] = np.median(win[: len(x) - 40], axis=1)
        out[col] = np.abs(x - base) / s
    return out


def longest_degraded_run(metrics: pd.DataFrame, thresh: float = 4.0) -> tuple[int, int]:
    z = zscores(metrics)
    deg = np.zeros(len(metrics), bool)
    for v in z.values():
        deg |= np.nan_to_num(v) > thresh
    best = cur = 0
    for flag in deg:
        cur = cur + 1 if flag else 0
        best = max(best, cur)
    return best, int(deg.sum())


# --------------------------------------------------------------------------- catalogue / API


def test_fault_catalogue():
    assert "none" in FAULTS
    assert len(REAL_FAULTS) >= 6
    assert len(set(FAULTS)) == len(FAULTS)
    assert all(isinstance(f, str) for f in FAULTS)


def test_unknown_fault_raises_listing_valid_names():
    with pytest.raises(ValueError) as exc:
        generate("cosmic_ray", 1)
    msg = str(exc.value)
    assert "cosmic_ray" in msg
    for f in FAULTS:
        assert f in msg


def test_scenario_is_frozen():
    sc = scen("none", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sc.truth = {}  # type: ignore[misc]


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("fault", ["bad_deploy", "none"])
def test_same_fault_and_seed_give_identical_bytes(tmp_path, fault):
    a = write_scenario(generate(fault, 7), tmp_path / "a")
    b = write_scenario(generate(fault, 7), tmp_path / "b")
    for name in a:
        assert filecmp.cmp(a[name], b[name], shallow=False), name


def test_different_seeds_differ():
    names = {tuple(scen("memory_leak", s).truth["services"]) for s in SEEDS}
    names |= {tuple(scen("memory_leak", s).truth["services"]) for s in (3, 4)}
    assert len(names) == 5
    m0, m1 = scen("none", 0).metrics, scen("none", 1).metrics
    assert not np.allclose(m0["rps"].to_numpy(), m1["rps"].to_numpy())
    assert scen("none", 0).truth["services"] != scen("none", 1).truth["services"]


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("fault", FAULTS)
def test_schema(fault):
    sc = scen(fault, 0)
    m, lg, ev, t = sc.metrics, sc.logs, sc.events, sc.truth

    # metrics: 24 h of minute-aligned points, base columns first, 0-2 numeric extras
    assert tuple(m.columns[:4]) == METRIC_COLS
    assert 0 <= len(m.columns) - 4 <= 2
    assert len(m) == 1440
    assert str(m["ts"].dt.tz) == "UTC"
    assert (m["ts"].diff().iloc[1:] == MIN).all()
    assert (m["ts"].dt.second == 0).all()
    assert 2025 <= m["ts"].iloc[0].year <= 2026 and m["ts"].iloc[-1].year <= 2026
    for col in m.columns[1:]:
        assert pd.api.types.is_numeric_dtype(m[col]), col
        assert m[col].notna().all(), col
    assert 60 <= m["rps"].median() <= 3000
    assert 50 <= m["p95_ms"].median() <= 600
    assert 0.001 <= m["error_rate"].median() <= 0.02

    # logs
    expected = LOG_COLS + (("error_kind",) if t["has_error_kind"] else ())
    assert tuple(lg.columns) == expected
    assert 25_000 <= len(lg) <= 80_000
    assert lg["ts"].is_monotonic_increasing
    assert lg["ts"].min() >= m["ts"].iloc[0] and lg["ts"].max() < m["ts"].iloc[-1] + MIN
    assert set(lg["level"]) <= {"INFO", "WARN", "ERROR"}
    assert (lg["level"] == "INFO").mean() > 0.6
    assert set(lg["service"]) == set(t["services"])
    assert lg["region"].nunique() == 3
    assert lg["trace_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert (lg["latency_ms"] > 0).all()
    assert lg["message"].str.len().min() > 5
    # INFO messages are varied and contain numbers / ids
    info = lg[lg["level"] == "INFO"]
    assert info["message"].str.contains(r"\d").mean() > 0.7
    for svc, grp in info.groupby("service"):
        shapes = grp["message"].str.replace(r"[0-9a-f]{8}|\d+(\.\d+)?", "#", regex=True).nunique()
        assert shapes >= 3, svc

    # events
    assert tuple(ev.columns) == EVENT_COLS
    assert 2 <= len(ev) <= 8
    assert set(ev["kind"]) <= {"deploy", "config", "feature_flag", "scale"}
    assert ev["ts"].is_monotonic_increasing
    assert set(ev["service"]) <= set(t["services"])

    # services / topology
    assert 4 <= len(t["services"]) <= 8
    assert len(set(t["services"])) == len(t["services"])


def test_log_volume_varies_by_service_and_noise_exists():
    sc = scen("none", 2)
    per_svc = sc.logs.groupby("service").size()
    assert per_svc.max() > 2 * per_svc.min()
    # at least one chronically noisy service: WARN/ERROR spread across the whole day
    b = bad(sc.logs)
    hours = b.groupby("service")["ts"].apply(lambda s: s.dt.floor("h").nunique())
    assert hours.max() >= 22


# --------------------------------------------------------------------------- truth


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fault", REAL_FAULTS)
def test_truth_is_consistent(fault, seed):
    sc = scen(fault, seed)
    t = sc.truth
    assert t["fault"] == fault and t["seed"] == seed
    assert ISO_MINUTE.match(t["start"]) and ISO_MINUTE.match(t["end"])
    start, end = window(sc)
    first, last = sc.metrics["ts"].iloc[0], sc.metrics["ts"].iloc[-1]
    assert first <= start < end <= last
    assert 20 <= (end - start) / MIN <= 180
    assert 0.15 * 1440 <= (start - first) / MIN <= 0.80 * 1440
    assert t["root_service"] in t["services"]
    assert re.fullmatch(r"(?:[A-Z][a-z0-9]*)+(?:[A-Z]+)?", t["root_kind"]), t["root_kind"]
    assert t["shape"] in {"ramp", "step", "cliff", "sawtooth"}
    assert isinstance(t["has_error_kind"], bool)
    assert set(t["callers"]) <= set(t["services"]) and t["root_service"] not in t["callers"]
    # the example message is a real root log line inside the window
    lg = sc.logs
    ex = lg[(lg["message"] == t["root_message_example"]) & (lg["service"] == t["root_service"])]
    assert len(ex) >= 1
    assert ((ex["ts"] >= start) & (ex["ts"] < end)).any()
    # truth is JSON-serialisable
    assert json.loads(json.dumps(t)) == t


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fault", REAL_FAULTS)
def test_root_errors_spike_inside_window(fault, seed):
    sc = scen(fault, seed)
    start, end = window(sc)
    root = sc.truth["root_service"]
    rb = bad(sc.logs[sc.logs["service"] == root])
    inside = rb[(rb["ts"] >= start) & (rb["ts"] < end)]
    outside = rb[(rb["ts"] < start) | (rb["ts"] >= end)]
    win_min = (end - start) / MIN
    rate_in = len(inside) / win_min
    rate_out = (len(outside) + 1) / (1440 - win_min)
    assert rate_in >= 0.5
    assert rate_in >= 10 * rate_out
    # the root starts complaining in the first degraded minute and stops with the window
    assert inside["ts"].min() < start + MIN
    after = rb[(rb["ts"] >= end) & (rb["ts"] < end + 10 * MIN)]
    assert len(after) / 10 <= max(0.25 * rate_in, 3 * rate_out)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fault", REAL_FAULTS)
def test_callers_name_root_and_start_later(fault, seed):
    sc = scen(fault, seed)
    start, end = window(sc)
    root = sc.truth["root_service"]
    lg = bad(sc.logs)
    root_onset = lg[(lg["service"] == root) & (lg["ts"] >= start)]["ts"].min()
    for caller in sc.truth["callers"]:
        cl = lg[lg["service"] == caller]
        mentions = cl[names(cl["message"], root)]
        in_win = mentions[(mentions["ts"] >= start) & (mentions["ts"] < end)]
        assert len(in_win) >= 3, caller
        # only incident lines name the root: nothing before start, nothing after end
        assert len(mentions) == len(in_win), caller
        assert in_win["ts"].min() > root_onset, caller
        assert in_win["ts"].min() >= start + 2 * MIN, caller
    # services that are not upstream of the root never blame it
    others = set(sc.truth["services"]) - set(sc.truth["callers"]) - {root}
    assert not names(lg[lg["service"].isin(others)]["message"], root).any()


def test_callers_are_often_louder_than_root():
    louder = total = 0
    for fault in REAL_FAULTS:
        for seed in SEEDS:
            sc = scen(fault, seed)
            if not sc.truth["callers"]:
                continue
            start, end = window(sc)
            w = bad(sc.logs)
            w = w[(w["ts"] >= start) & (w["ts"] < end)]
            n_root = (w["service"] == sc.truth["root_service"]).sum()
            n_callers = w["service"].isin(sc.truth["callers"]).sum()
            total += 1
            louder += n_callers > n_root
    assert total >= len(REAL_FAULTS)
    assert louder / total >= 0.5


@pytest.mark.parametrize("fault", REAL_FAULTS)
def test_noisy_background_rivals_root(fault):
    """Some innocent service emits WARN/ERROR all day at a rate comparable to the root's."""
    sc = scen(fault, 1)
    start, end = window(sc)
    root = sc.truth["root_service"]
    b = bad(sc.logs)
    outside = b[(b["ts"] < start) | (b["ts"] >= end)]
    inside_root = b[(b["service"] == root) & (b["ts"] >= start) & (b["ts"] < end)]
    win_min = (end - start) / MIN
    root_rate = len(inside_root) / win_min
    noisy_rate = outside[outside["service"] != root].groupby("service").size().max() / (1440 - win_min)
    assert noisy_rate >= 0.5 * root_rate


# --------------------------------------------------------------------------- error_kind


def test_error_kind_presence_varies_across_seeds():
    flags = {scen(f, s).truth["has_error_kind"] for f in REAL_FAULTS for s in SEEDS}
    assert flags == {True, False}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fault", FAULTS)
def test_error_kind_column_matches_truth(fault, seed):
    sc = scen(fault, seed)
    lg = sc.logs
    if not sc.truth["has_error_kind"]:
        assert "error_kind" not in lg.columns
        return
    assert "error_kind" in lg.columns
    assert (lg.loc[lg["level"] == "INFO", "error_kind"] == "").all()
    assert (lg.loc[lg["level"] != "INFO", "error_kind"] != "").all()
    if fault == "none":
        return
    start, end = window(sc)
    root, kind = sc.truth["root_service"], sc.truth["root_kind"]
    w = bad(lg[(lg["ts"] >= start) & (lg["ts"] < end)])
    root_kinds = w.loc[w["service"] == root, "error_kind"]
    assert (root_kinds == kind).mean() >= 0.9
    assert (lg.loc[lg["service"] != root, "error_kind"] != kind).all()
    for caller in sc.truth["callers"]:
        ck = w.loc[(w["service"] == caller) & names(w["message"], root), "error_kind"]
        assert len(ck) and ck.str.startswith("Upstream").all()


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fault", REAL_FAULTS)
def test_metric_shift_is_detectable(fault, seed):
    sc = scen(fault, seed)
    m = sc.metrics.set_index("ts")
    start, end = window(sc)
    pre = m[(m.index >= start - 40 * MIN) & (m.index < start - 10 * MIN)]
    head = m[(m.index >= start) & (m.index < start + 3 * MIN)]
    win = m[(m.index >= start) & (m.index < end)]
    onset_z, peak_z = [], []
    for col in BASE_METRICS:
        s = noise_sigma(m[col].to_numpy(float))
        base = pre[col].median()
        onset_z.append(abs(head[col].median() - base) / s)
        peak_z.append((win[col] - base).abs().max() / s)
    assert max(onset_z) >= 4.0, onset_z
    assert max(peak_z) >= 8.0, peak_z
    # the minute before the window is not degraded yet
    z = zscores(sc.metrics)
    i0 = int((start - sc.metrics["ts"].iloc[0]) / MIN)
    assert max(v[i0 - 1] for v in z.values()) < 4.0
    assert max(v[i0] for v in z.values()) >= 4.0
    # metrics are back to baseline right after `end`
    post = m[(m.index >= end + 1 * MIN) & (m.index < end + 6 * MIN)]
    later = m[(m.index >= end + 10 * MIN) & (m.index < end + 40 * MIN)]
    for col in BASE_METRICS:
        s = noise_sigma(m[col].to_numpy(float))
        assert abs(post[col].median() - later[col].median()) < 3.5 * s, col


def test_shapes_differ_between_faults():
    """ramp grows, cliff drops traffic, sawtooth has repeated error spikes."""
    ramp = scen("db_latency_ramp", 0)
    s, e = window(ramp)
    w = ramp.metrics[(ramp.metrics["ts"] >= s) & (ramp.metrics["ts"] < e)]["p95_ms"].to_numpy()
    k = max(3, len(w) // 5)
    assert w[-k:].mean() > w[:k].mean() * 1.3

    cliff = scen("dependency_outage", 0)
    s, e = window(cliff)
    m = cliff.metrics
    before = m[(m["ts"] >= s - 30 * MIN) & (m["ts"] < s)]["rps"].median()
    during = m[(m["ts"] >= s) & (m["ts"] < e)]["rps"].median()
    assert during < 0.65 * before

    saw = scen("memory_leak", 0)
    s, e = window(saw)
    err = saw.metrics[(saw.metrics["ts"] >= s) & (saw.metrics["ts"] < e)]["error_rate"].to_numpy()
    spikes = np.flatnonzero(err > np.median(err) * 3)
    assert len(spikes) >= 2 and (np.diff(spikes) > 3).any()


@pytest.mark.parametrize("seed", SEEDS)
def test_none_has_no_incident(seed):
    sc = scen("none", seed)
    t = sc.truth
    for key in ("start", "end", "root_service", "root_kind", "root_message_example"):
        assert t[key] is None, key
    assert t["callers"] == []
    run, n_deg = longest_degraded_run(sc.metrics)
    assert run <= 5
    assert n_deg >= 2  # the benign blips are there and are visible
    # the same detector does see a real incident (so this check can fail)
    fault_run, _ = longest_degraded_run(scen("conn_pool_exhaustion", seed).metrics)
    assert fault_run >= 15


# --------------------------------------------------------------------------- events


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fault", FAULTS)
def test_events(fault, seed):
    sc = scen(fault, seed)
    ev, t = sc.events, sc.truth
    root = t["root_service"]
    harmless = ev if root is None else ev[ev["service"] != root]
    assert 2 <= len(harmless) <= 7
    if fault == "none":
        assert 2 <= len(ev) <= 6
        return
    start, end = window(sc)
    root_ev = ev[ev["service"] == root]
    if fault == "bad_deploy":
        hit = root_ev[(root_ev["kind"] == "deploy") & (root_ev["ts"] >= start - 10 * MIN) & (root_ev["ts"] < start)]
        assert len(hit) == 1
        assert t["trigger_event"]["service"] == root
    elif fault == "config_rate_limit":
        hit = root_ev[root_ev["kind"].isin(["config", "feature_flag"])
                      & (root_ev["ts"] >= start - 10 * MIN) & (root_ev["ts"] < start)]
        assert len(hit) == 1
    else:
        assert len(root_ev) == 0
        assert t["trigger_event"] is None
    # some harmless change lands within a couple of hours of the incident
    near = harmless[(harmless["ts"] >= start - 120 * MIN) & (harmless["ts"] < end + 120 * MIN)]
    assert len(near) >= 1


# --------------------------------------------------------------------------- writing


def test_write_scenario_round_trip(tmp_path):
    sc = scen("conn_pool_exhaustion", 1)
    out = tmp_path / "nested" / "dir"
    paths = write_scenario(sc, out)
    assert set(paths) == {"metrics", "logs", "events", "truth"}
    assert {p.name for p in paths.values()} == {"metrics.csv", "logs.csv", "events.csv", "truth.json"}
    assert all(p.exists() and p.parent == out for p in paths.values())

    m = pd.read_csv(paths["metrics"])
    assert list(m.columns) == list(sc.metrics.columns)
    assert m["ts"].str.match(ISO_MINUTE).all()
    assert (pd.to_datetime(m["ts"], utc=True) == sc.metrics["ts"]).all()
    for col in sc.metrics.columns[1:]:
        np.testing.assert_allclose(m[col].to_numpy(), sc.metrics[col].to_numpy())

    lg = pd.read_csv(paths["logs"], keep_default_na=False, dtype={"trace_id": str})
    assert list(lg.columns) == list(sc.logs.columns)
    assert len(lg) == len(sc.logs)
    assert lg["ts"].str.match(ISO_SECOND).all()
    assert (pd.to_datetime(lg["ts"], utc=True).to_numpy() == sc.logs["ts"].to_numpy()).all()
    for col in ("service", "level", "message", "endpoint", "region", "trace_id"):
        assert (lg[col].astype(str).to_numpy() == sc.logs[col].astype(str).to_numpy()).all(), col
    np.testing.assert_allclose(lg["latency_ms"].to_numpy(float), sc.logs["latency_ms"].to_numpy(float))

    ev = pd.read_csv(paths["events"])
    assert list(ev.columns) == list(EVENT_COLS)
    assert ev["ts"].str.match(ISO_SECOND).all()
    assert list(ev["description"]) == list(sc.events["description"])

    assert json.loads(paths["truth"].read_text()) == sc.truth


def test_write_empty_events_keeps_columns(tmp_path):
    sc = scen("none", 0)
    empty = Scenario(sc.metrics, sc.logs, sc.events.iloc[0:0], sc.truth)
    paths = write_scenario(empty, tmp_path)
    ev = pd.read_csv(paths["events"])
    assert list(ev.columns) == list(EVENT_COLS) and len(ev) == 0


def test_generation_is_fast():
    t0 = time.perf_counter()
    generate("tls_cert_expiry", 12345)
    assert time.perf_counter() - t0 < 3.0  # budget is 1.5 s; slack for loaded CI boxes

"""The NAB scorer against NAB's own scores of its reference detectors, plus the harness's window metrics.

The reference table is NAB's scorer at numenta/NAB commit ea702d75 on the 35 files of
`<repo>/../shared/datasets/nab` (see `reference_results/README.md` there): thresholds
re-optimised on these files, and NAB's published `config/thresholds.json`.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evals import nab, nab_scoring

NAB_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "nab"

# detector -> profile -> (re-optimised threshold, normalised score, published threshold, normalised score)
REFERENCE = {
    "numenta": {
        "standard": (0.555458997389, 66.5858, 0.5421876907348634, 66.4691),
        "reward_low_FP_rate": (0.602095149663, 60.8051, 0.5751955032348636, 59.9701),
        "reward_low_FN_rate": (0.555458997389, 71.0572, 0.5421876907348634, 70.9794),
    },
    "windowedGaussian": {
        "standard": (0.999999999999, 21.9706, 1.0, 21.9331),
        "reward_low_FP_rate": (1.0, 4.8697, 1.0, 4.8697),
        "reward_low_FN_rate": (0.999999999999, 29.7986, 1.0, 29.1675),
    },
}


@pytest.fixture(scope="module")
def reference_rows() -> dict[str, nab_scoring.ScoredRows]:
    if not NAB_DIR.is_dir():
        pytest.skip(f"NAB data not found at {NAB_DIR} (expected <repo>/../shared/datasets/nab)")
    labels = json.loads(nab.labels_path(NAB_DIR).read_text(encoding="utf-8"))
    rows = {}
    for detector in REFERENCE:
        parts, offset = [], 0
        for name in sorted(labels):
            category, file = name.split("/")
            results = pd.read_csv(NAB_DIR / "reference_results" / detector / category / f"{detector}_{file}", usecols=["timestamp", "anomaly_score"])
            bounds = nab_scoring.window_bounds(results["timestamp"], labels[name])
            parts.append(nab_scoring.scored_rows(results["anomaly_score"].to_numpy(), bounds, offset))
            offset += len(bounds)
        rows[detector] = nab_scoring.combine(parts)
    return rows


@pytest.mark.parametrize("detector", list(REFERENCE))
@pytest.mark.parametrize("profile", list(nab_scoring.PROFILES))
def test_scorer_reproduces_nab(reference_rows, detector, profile):
    rows = reference_rows[detector]
    best_threshold, best_score, published_threshold, published_score = REFERENCE[detector][profile]
    assert rows.windows == 55
    optimised = nab_scoring.score(rows, nab_scoring.PROFILES[profile])
    assert optimised.threshold == pytest.approx(best_threshold, rel=1e-12)
    assert optimised.normalised == pytest.approx(best_score, abs=1e-3)
    published = nab_scoring.score(rows, nab_scoring.PROFILES[profile], published_threshold)
    assert published.normalised == pytest.approx(published_score, abs=1e-3)


def _single_window(anomaly: np.ndarray, bounds: list[tuple[int, int]], profile: str = "standard") -> float:
    return nab_scoring.score(nab_scoring.scored_rows(anomaly, bounds), nab_scoring.PROFILES[profile], 0.5).raw


def test_first_detection_in_a_window_counts_and_earlier_is_better():
    rows, window = 1000, (500, 599)
    at_start, at_middle, both = np.zeros(rows), np.zeros(rows), np.zeros(rows)
    at_start[500] = at_middle[550] = 1.0
    both[[500, 550]] = 1.0
    assert _single_window(at_start, [window]) == pytest.approx(1.0)
    assert 0 < _single_window(at_middle, [window]) < 1.0
    assert _single_window(both, [window]) == pytest.approx(1.0)
    assert _single_window(np.zeros(rows), [window]) == -1.0
    assert _single_window(np.zeros(rows), [window], "reward_low_FN_rate") == -2.0


def test_false_positives_weighted_by_distance_from_the_preceding_window():
    rows, window = 1000, (500, 599)
    before, just_after, far_after = np.zeros(rows), np.zeros(rows), np.zeros(rows)
    before[300] = just_after[605] = far_after[950] = 1.0
    assert _single_window(before, [window]) == pytest.approx(-1.0 - 0.11)
    assert -1.0 - 0.11 < _single_window(just_after, [window]) < -1.0
    assert _single_window(far_after, [window], "reward_low_FP_rate") == pytest.approx(-1.0 - 0.22)


def test_probationary_rows_are_not_scored():
    assert nab_scoring.probation_length(1000) == 150
    assert nab_scoring.probation_length(20000) == 750
    in_probation = np.zeros(1000)
    in_probation[149] = 1.0
    assert _single_window(in_probation, []) == 0.0
    in_probation[150] = 1.0
    assert _single_window(in_probation, []) == pytest.approx(-0.11)


def test_window_metrics_count_hits_false_detections_and_iou():
    frame = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=1000, freq="5min"), "value": 0.0})
    file = nab.NabFile("cat/f.csv", frame, [(400, 499), (700, 799)])
    windows = [nab.ReportedWindow(450, 549, 1.0), nab.ReportedWindow(100, 109, 1.0), nab.ReportedWindow(900, 909, 1.0)]
    scores = nab.product_scores(len(frame), windows)
    metrics = nab.file_metrics(nab.FileResult(file, scores, windows, 0.0))
    assert (metrics["hits"], metrics["detections"], metrics["false_detections"]) == (1, 2, 1)
    assert metrics["best_iou"] == [pytest.approx(50 / 150), 0.0]
    assert metrics["missed_windows"] == [f"{frame.ts[700]} .. {frame.ts[799]}"]


def test_causal_detection_counts_at_the_run_that_first_reports_the_window():
    rng = np.random.default_rng(0)
    values = 10 + rng.normal(0, 0.5, 600)
    values[400:460] += 20
    frame = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=600, freq="5min"), "value": values})
    full = np.flatnonzero(nab.product_scores(len(frame), nab.product_windows(frame)))
    causal = np.flatnonzero(nab.causal_detections(frame, stride=10)[0])
    # Runs are at the last probationary row (89), then every 10 rows: the shift at row 400 is first in
    # the data at the run at row 409. A shift still going on at the very end of the data is seen
    # a few runs late (the baseline's reflected end continues it): within three runs. (The runs
    # after the shift ends report its tail as another window: the detector's end-of-data weakness,
    # recorded on the detection issue, not hidden here.)
    assert set(causal) <= set(range(89, 600, 10))
    assert 409 <= causal[0] <= 429 and (causal > full[0]).all()


# Floors at the measured values (evals/nab_results.md), so a change that loses ground on NAB
# fails here; the target of the detection issue (>= 72) is far above them.
PRODUCT_FLOORS = {"standard": 50.0, "reward_low_FP_rate": 41.0, "reward_low_FN_rate": 55.0}


def test_product_on_the_real_nab_series_holds_its_measured_score():
    if not NAB_DIR.is_dir():
        pytest.skip(f"NAB data not found at {NAB_DIR} (expected <repo>/../shared/datasets/nab)")
    files = nab.load_corpus(NAB_DIR, ["realKnownCause", "realAWSCloudwatch"], progress=lambda _: None)
    scores = nab.nab_scores([nab.run_file(f, None) for f in files])
    assert all(scores[name] >= floor for name, floor in PRODUCT_FLOORS.items()), scores


def test_product_reports_nothing_on_the_artificial_series_without_anomalies():
    if not NAB_DIR.is_dir():
        pytest.skip(f"NAB data not found at {NAB_DIR} (expected <repo>/../shared/datasets/nab)")
    files = sorted((NAB_DIR / "data" / "artificialNoAnomaly").glob("*.csv"))
    assert files
    reported = {path.name: nab.product_windows(nab.read_series(path)) for path in files}
    assert reported == {path.name: [] for path in files}

"""Is a difference real? Known answers: two evaluations of one setting with different sample seeds are not told
apart; a clearly worse setting is; the intervals over seeds and the bootstrap interval of a single run."""
import numpy as np
import pandas as pd
import pytest

from harness.evaluation.bootstrap import bootstrap_fid_interval
from harness.evaluation.metrics import feature_statistics, frechet_distance
from harness.report.noise import BEYOND, WITHIN, fid_intervals, mark, versus_interval, versus_value

D, N = 32, 1500


@pytest.fixture(scope="module")
def reference():
    return feature_statistics(np.random.default_rng(0).standard_normal((20_000, D)))


def _run(seed: int, shift: float = 0.0) -> np.ndarray:
    """A run's generated features: N(shift, I), sample seed `seed`."""
    return np.random.default_rng(seed).standard_normal((N, D)) + shift


def test_the_bootstrap_interval_holds_the_measured_fid_and_is_reproducible(reference):
    x = _run(1)
    fid = frechet_distance(*feature_statistics(x), *reference)
    low, high = bootstrap_fid_interval(x, *reference, resamples=200, seed=0)
    assert low < fid < high and high - low > 0.01
    assert bootstrap_fid_interval(x, *reference, resamples=200, seed=0) == (low, high)


def test_sample_seeds_of_one_setting_are_within_the_noise(reference):
    """Six pairs of evaluations of the same distribution with other sample seeds: none told apart (95% intervals
    that must not overlap: a false alarm is far rarer than 5% per pair)."""
    intervals = [bootstrap_fid_interval(_run(seed), *reference, resamples=100) for seed in range(1, 13)]
    verdicts = [versus_interval(*intervals[2 * i], *intervals[2 * i + 1]) for i in range(6)]
    assert verdicts.count(BEYOND) == 0, verdicts


def test_a_clearly_worse_setting_is_beyond_the_noise(reference):
    good = bootstrap_fid_interval(_run(1), *reference, resamples=100)
    worse = bootstrap_fid_interval(_run(2, shift=0.15), *reference, resamples=100)
    assert versus_interval(*good, *worse) == BEYOND
    assert versus_value(*good, worse[0]) == BEYOND and versus_value(*good, sum(good) / 2) == WITHIN


def test_intervals_over_seeds_and_of_single_runs():
    frame = pd.DataFrame({"mean": [10.0, 10.0, 5.0, 7.0], "std": [1.0, np.nan, np.nan, np.nan], "n": [3, 1, 1, 0],
                          "low": [np.nan, 9.5, np.nan, np.nan], "high": [np.nan, 10.8, np.nan, np.nan]})
    ci = fid_intervals(frame["mean"], frame["std"], frame.n, frame.low, frame.high)
    half = 4.302652729911275 / np.sqrt(3)  # t_{0.975, 2}
    assert ci.ci_low[0] == pytest.approx(10 - half) and ci.ci_high[0] == pytest.approx(10 + half)
    assert list(ci.ci_kind) == ["seeds", "bootstrap", "", ""]
    assert (ci.ci_low[1], ci.ci_high[1]) == (9.5, 10.8) and ci.ci_low[2:].isna().all()
    assert versus_interval(np.nan, 1, 2, 3) == "" and mark("+0.605", BEYOND) == "+0.605 *"
    assert mark("+0.120", WITHIN) == "+0.120"

"""Is a difference real? Each setting's FID gets the 95% interval it can measure: over seeds where it ran with
several (mean +- t_{0.975, n-1} std / sqrt(n)), else the bootstrap interval over its generated samples that its
evaluation computed (harness/evaluation/bootstrap.py). Two settings differ beyond the noise only when their
intervals do not overlap; a published number (no interval of its own) differs beyond the noise when it lies
outside ours. Conservative by design: overlapping 95% intervals can hide a real difference, never invent one."""
import numpy as np
import pandas as pd
from scipy import stats

RULE = ("a difference is marked beyond the noise (*) only where the 95% intervals do not overlap (a published "
        "number: where it lies outside ours); intervals: mean ± t std/√n over seeds (n ≥ 2), else a bootstrap over "
        "the run's generated samples")
BEYOND, WITHIN = "beyond noise", "within noise"


def fid_intervals(mean: pd.Series, std: pd.Series, n: pd.Series, low: pd.Series, high: pd.Series) -> pd.DataFrame:
    """ci_low, ci_high, ci_kind (seeds | bootstrap | "") per setting from its mean, std and n over seeds and, for
    a single run, the bootstrap interval its row carries."""
    n = n.fillna(0).astype(int)
    half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * std / np.sqrt(np.maximum(n, 1))
    seeds = n >= 2
    single = (n == 1) & low.notna() & high.notna()
    return pd.DataFrame({"ci_low": np.where(seeds, mean - half, np.where(single, low, np.nan)),
                         "ci_high": np.where(seeds, mean + half, np.where(single, high, np.nan)),
                         "ci_kind": np.where(seeds, "seeds", np.where(single, "bootstrap", ""))}, index=mean.index)


def versus_value(low, high, value) -> str:
    """A published value against our interval: beyond the noise when outside it; "" when either is missing."""
    if any(pd.isna(v) for v in (low, high, value)):
        return ""
    return BEYOND if value < low or value > high else WITHIN


def versus_interval(low_a, high_a, low_b, high_b) -> str:
    """Two intervals: beyond the noise when they do not overlap; "" when either is missing."""
    if any(pd.isna(v) for v in (low_a, high_a, low_b, high_b)):
        return ""
    return BEYOND if high_a < low_b or high_b < low_a else WITHIN


def mark(diff: str, verdict: str) -> str:
    """A difference's cell with its verdict: "+0.605 *" beyond the noise, "+0.120" within it."""
    return f"{diff} *" if diff and verdict == BEYOND else diff

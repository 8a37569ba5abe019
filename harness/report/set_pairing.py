"""A stored baseline set beside a report (`scm-bench report RECIPE --compare NAME`): the set's rows on our data sets
become rows of the table (source: the set's name), and each of our rows gets the set's value paired with it.

Pairing is by data set, metric, NFE and guidance scale (a set row without a scale is unguided: scale 1), never by
position. Method and size narrow it where the set has ours on that data set: our sCD pairs with the set's sCD only
(none where the set's sCD lacks that NFE or scale), while a method the set does not have (a new one) pairs with
whatever the set has at that data set, metric, NFE and scale. A row the set has nothing for gets no value, and so
does one the set has several different values for (ambiguous: never a guess; the set's rows are in the table)."""
import numpy as np
import pandas as pd

from .baseline_sets import BaselineSet, column_or
from .noise import fid_intervals, versus_interval, versus_value
from .paper import OUR_METHODS, PAPER_METHODS
from .rows import OURS, SETTING, setting_label

PAIRED_ON = ["dataset", "metric", "_nfe", "_guidance"]
NARROWED_BY = [("_method", "_set_method"), ("size", "_set_size")]  # in this order


def our_datasets(frame: pd.DataFrame) -> pd.DataFrame:
    """Each setting of the gathered rows (the table's SETTING columns) with its data set ("" where unknown)."""
    datasets = frame.dataset if "dataset" in frame else pd.Series("", index=frame.index)
    labelled = frame.assign(setting=setting_label(frame), dataset=datasets.fillna("").astype(str))
    return labelled.drop_duplicates(SETTING)[[*SETTING, "dataset"]]


def set_settings(baseline: BaselineSet, datasets) -> pd.DataFrame:
    """The set's rows on these data sets in the shape of aggregate()'s rows: one per (setting, metric), source the
    set's name; a published row's setting is its table (so Table 3's columns stay apart), a saved row's its own."""
    rows = baseline.rows[baseline.rows.dataset.isin(list(datasets)) & baseline.rows.nfe.notna()]
    if rows.empty:
        return pd.DataFrame()
    method = rows.method.map(OUR_METHODS).fillna(rows.method)
    saved = baseline.saved_from_run
    return pd.DataFrame({
        "source": baseline.name, "setting": column_or(rows, "setting", "") if saved else rows.table,
        "stage": column_or(rows, "stage", method), "method": method,
        "size": rows["size"], "sampler": column_or(rows, "sampler", ""), "nfe": rows.nfe.astype(int),
        "guidance": rows.guidance.fillna(1.0).astype(float), "sigma_rel": "", "metric": rows.metric,
        "mean": rows.value, "std": column_or(rows, "std", np.nan), "n": column_or(rows, "n", 1).astype(int),
        "n_diverged": column_or(rows, "n_diverged", 0).astype(int), "fid_ratio": np.nan,
        "method_label": rows.method, "base": rows.family.eq("diffusion"), "ema_sweep": False,
        "params_m": rows.params_m, "train_minutes": np.nan, "grid": ""}).reset_index(drop=True)


def with_set_rows(settings: pd.DataFrame, sets: list[BaselineSet], datasets: pd.DataFrame) -> pd.DataFrame:
    """aggregate()'s rows and, after them, each set's rows on our data sets (our_datasets: those of our own rows,
    else of every source's)."""
    if not sets:
        return settings
    ours = datasets[datasets.source == OURS] if (datasets.source == OURS).any() else datasets
    parts = [settings, *[set_settings(baseline, set(ours.dataset) - {""}) for baseline in sets]]
    return pd.concat([part for part in parts if len(part)], ignore_index=True)


def _key(nfe: pd.Series, guidance: pd.Series) -> dict:
    return {"_nfe": nfe.astype(float), "_guidance": guidance.fillna(1.0).astype(float).round(6)}


def paired_values(ours: pd.DataFrame, baseline: BaselineSet) -> pd.Series:
    """Per row of ours (aggregated rows with dataset, metric, method, size, nfe, guidance): the set's value paired
    with it (see the module's docstring), NaN where none or several differ."""
    return paired_rows(ours, baseline).value


def paired_rows(ours: pd.DataFrame, baseline: BaselineSet) -> pd.DataFrame:
    """paired_values with the paired value's spread over the set's seeds: value, std, n per row of ours (std NaN
    where the set has none: a published number)."""
    left = ours.assign(_row=ours.index, _method=ours.method.map(PAPER_METHODS).fillna(ours.method),
                       **_key(ours.nfe, ours.guidance))[["_row", *PAIRED_ON, "_method", "size"]]
    theirs = baseline.rows
    right = theirs.assign(_set_method=theirs.method, _set_size=theirs["size"], _std=column_or(theirs, "std", np.nan),
                          _n=column_or(theirs, "n", 1), **_key(theirs.nfe, theirs.guidance))
    merged = left.merge(right[[*PAIRED_ON, "_set_method", "_set_size", "value", "_std", "_n"]], on=PAIRED_ON)
    for mine, its in NARROWED_BY:  # only to what the set has of ours, where it has ours on that data set
        set_has = pd.MultiIndex.from_frame(right[["dataset", its]].astype(str))
        has_ours = pd.MultiIndex.from_frame(merged[["dataset", mine]].astype(str)).isin(set_has)
        merged = merged[(merged[mine] == merged[its]) | ~has_ours]
    groups = merged.dropna(subset=["value"]).groupby("_row")
    unique = groups.value.nunique() == 1
    paired = groups[["value", "_std", "_n"]].first().astype(float).where(unique, axis=0)
    return paired.rename(columns={"_std": "std", "_n": "n"}).reindex(ours.index)


def with_set_values(table: pd.DataFrame, long: pd.DataFrame, datasets: pd.DataFrame,
                    sets: list[BaselineSet]) -> pd.DataFrame:
    """The compiled table with, per set, a column of its value beside each of our rows ("NAME FID", "NAME kid",
    ...: the metrics it pairs with any) and "ours - NAME" (FID)."""
    keys = [column for column in SETTING if column in table]
    ours = long[long.source == OURS].merge(datasets, on=SETTING, how="left")
    ours = ours.assign(dataset=ours.dataset.fillna(""))
    for baseline in sets:
        paired = paired_rows(ours, baseline)
        values = ours.assign(paired=paired.value.values).dropna(subset=["paired"])
        if values.empty:
            continue
        wide = values.pivot(index=keys, columns="metric", values="paired")
        names = {metric: f"{baseline.name} {'FID' if metric == 'fid' else metric}" for metric in wide.columns}
        table = table.merge(wide.rename(columns=names), left_on=keys, right_index=True, how="left")
        if "fid" in names:
            table[f"ours - {baseline.name}"] = table.fid - table[names["fid"]]
            table[f"ours - {baseline.name} noise"] = _verdicts(table, keys, ours, paired)
    return table


def _verdicts(table: pd.DataFrame, keys: list[str], ours: pd.DataFrame, paired: pd.DataFrame) -> list[str]:
    """Per table row, our FID against the set's (noise.py; `paired`: paired_rows of ours): intervals that do not
    overlap where the set has a spread over seeds, else its number outside our interval."""
    fid = ours.metric == "fid"
    spread = paired[fid].set_index(pd.MultiIndex.from_frame(ours.loc[fid, keys]))
    theirs = spread.reindex(pd.MultiIndex.from_frame(table[keys]))
    ci = fid_intervals(theirs.value, theirs["std"], theirs.n.where(theirs["std"].notna(), 0),
                       pd.Series(np.nan, index=theirs.index), pd.Series(np.nan, index=theirs.index))
    nan = pd.Series(np.nan, index=table.index)
    ours_ci = zip(table.get("fid_ci_low", nan), table.get("fid_ci_high", nan))
    return [versus_interval(lo, hi, their_lo, their_hi) if pd.notna(their_lo) else versus_value(lo, hi, value)
            for (lo, hi), their_lo, their_hi, value in zip(ours_ci, ci.ci_low, ci.ci_high, theirs.value)]

"""A run's finished rows frozen as a baseline set (`scm-bench baselines save`): the report's rows of the run (its
manifest's evaluations, at their last step, the EMA each stage samples), aggregated over seeds as the report's table
does (mean, sample std, n; diverged runs counted, never averaged), in the paper's columns (the method in the paper's
spelling) with their provenance: recipe, recipe hash, code version, evaluation date, machine / threads / torch where
the rows record them, seeds."""
import hashlib
from datetime import datetime, timezone

import pandas as pd

from ..store.runs import RunIndex
from .paper import METHOD_FAMILIES, PAPER_METHODS, BaselineError, dataset_name
from .rows import OURS, SETTING, gather, sampled_ema_rows, setting_label
from .tables import aggregate

# columns of the rows joined per setting (every distinct value; "" where no row records it)
JOINED = {"dataset": "dataset", "seeds": "seed", "code_version": "code_version", "machine": "machine",
          "threads": "threads", "torch": "torch"}


def label_datasets(frame: pd.DataFrame, manifests: list[RunIndex]) -> pd.DataFrame:
    """Each row with its data set (the baseline files' name of its recipe's data.name), found by its training job in
    the runs' manifests; "" where no manifest names one."""
    datasets = {job.train.id: dataset_name(job.train.data.name) for manifest in manifests
                for job in manifest.plan.evaluate if job.train.data is not None}
    if frame.empty:
        return frame
    return frame.assign(dataset=frame.job.map(datasets).fillna("").astype(str))


def recipe_hash(manifest: RunIndex) -> str:
    """A hash of the evaluations the run planned (their ids hash the recipe's settings, data, seeds and sampling):
    two runs of the same experiment have the same hash, whatever the recipe file's comments or name."""
    ids = "\n".join(sorted(job.id for job in manifest.plan.evaluate))
    return hashlib.sha256(ids.encode()).hexdigest()[:12]


def _distinct(values: pd.Series) -> str:
    kept = {str(value) for value in values if not (pd.isna(value) or str(value) == "")}
    return " ".join(sorted(kept, key=lambda text: (len(text), text)))


def _provenance(frame: pd.DataFrame) -> pd.DataFrame:
    """Per setting: its data set, seeds, code versions, machines, threads, torch versions, newest evaluation date."""
    grouped = frame.assign(setting=setting_label(frame)).groupby(SETTING, sort=False)
    joined = {name: grouped[column].agg(_distinct) if column in frame else grouped.seed.agg(lambda _: "")
              for name, column in JOINED.items()}
    dates = grouped.date.agg(lambda values: max((str(v) for v in values if str(v)), default=""))
    return pd.DataFrame({**joined, "date": dates}).reset_index()


def finished_rows(manifest: RunIndex) -> pd.DataFrame:
    """The run's rows the report would tabulate (last step, sampled EMA), with their data sets; a run with none is
    an error that says what to do."""
    frame = label_datasets(gather(manifest), [manifest])
    if not frame.empty:
        frame = sampled_ema_rows(frame[~frame.intermediate]).assign(source=OURS)
    if frame.empty:
        name = manifest.recipe
        raise BaselineError(f"{name}: no finished evaluations to save; wait for the run to finish (scm-bench status "
                            f"recipes/{name.removesuffix('-smoke')}.yaml) or run it first")
    return frame


def frozen_rows(manifest: RunIndex, set_name: str) -> pd.DataFrame:
    """The run's finished rows as a baseline set: one row per (setting, metric), the paper's columns first."""
    frame = finished_rows(manifest)
    stats = aggregate(frame).merge(_provenance(frame), on=SETTING, how="left")
    codes = _distinct(frame.code_version) if "code_version" in frame else ""
    saved = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source = f"scm-bench run of {manifest.recipe} (code {codes or 'not recorded'}), saved as {set_name}"
    rows = pd.DataFrame({
        "table": manifest.recipe, "dataset": stats.dataset, "method": stats.method.map(PAPER_METHODS).fillna(
            stats.method), "family": stats.method.map(METHOD_FAMILIES).fillna(""), "size": stats["size"],
        "params_m": stats.params_m, "nfe": stats.nfe, "guidance": stats.guidance, "metric": stats.metric,
        "value": stats["mean"], "source": source, "std": stats["std"], "n": stats.n,
        "n_diverged": stats.n_diverged, "seeds": stats.seeds, "setting": stats.setting, "stage": stats.stage,
        "sampler": stats.sampler, "recipe": manifest.recipe, "recipe_hash": recipe_hash(manifest),
        "code_version": stats.code_version, "date": stats.date, "saved": saved, "machine": stats.machine,
        "threads": stats.threads, "torch": stats.torch})
    return rows.reset_index(drop=True)

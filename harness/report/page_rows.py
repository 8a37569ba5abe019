"""The leaderboard page's rows, results/<recipe>/page.csv: what the page shows, and what its browser test compares
the page with. Per data set and metric: one row per row of the compiled table from a run (ours and each --compare
run: one row per setting, as table.csv; seeds averaged) that has a value of that metric (FID: or diverged), with its
provenance; then every row of each baseline set (the csv files under results/baselines/ and each --compare set) on
that data set and metric. Built from the compiled table, so `scm-bench report` and a page rebuilt from a committed
table.csv (page_source.py) share it."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..recipe.text import RecipeError, parse_yaml
from ..store.runs import RunIndex
from .baseline_sets import BaselineSet
from .freeze import recipe_hash
from .paper import METHOD_FAMILIES, PAPER_TABLES, dataset_name
from .rows import OURS, SETTING, setting_label, source_label
from .tables import TABLE_COLUMNS

PROJECT = Path(__file__).resolve().parents[2]
# metrics in this order (others after them, by name)
METRIC_ORDER = ("fid", "fd_dinov2", "kid", "precision", "recall", "class_accuracy")
OTHER_FAMILY = "other"  # a user's method
OLD_STAGE_NAMES = {"teacher": "diffusion"}  # the oldest tables name the teacher's method by its stage
# where each row came from (empty where nothing recorded it); a saved baseline set's rows carry most of these too
PROVENANCE = ["recipe", "recipe_file", "recipe_hash", "jobs", "code_version", "date", "machine", "threads", "torch",
              "train_machine", "train_threads", "train_torch", "seeds", "train_seconds", "gpu_hours"]
PAGE_COLUMNS = ["dataset", "metric", "set", "reference", "method", "method_label", "family", "stage", "setting",
                "size", "params_m", "sampler", "nfe", "guidance", "sigma_rel", "value", "std", "n", "n_diverged",
                "ci_low", "ci_high", "paper", "vs_paper", "paper_ratio", "fid_ratio", "train_minutes", "grid",
                *PROVENANCE]
NUMERIC_COLUMNS = ("params_m", "nfe", "guidance", "value", "std", "n", "n_diverged", "ci_low", "ci_high", "paper",
                   "paper_ratio", "fid_ratio", "train_minutes", "train_seconds", "gpu_hours")
# GPU names as torch.cuda.get_device_name gives them (a row's machine is that, else the CPU's model)
GPU_NAMES = ("nvidia", "geforce", "tesla", "quadro", "rtx", "instinct", "radeon")


@dataclass(frozen=True)
class RecipeSource:
    """A recipe whose rows a page shows: its name, the recipe file its run used and the run's hash (freeze.py's
    recipe_hash: same experiment, same hash); file and hash unknown for results whose runs are gone."""
    name: str
    file: Path | None = None
    run_hash: str = ""

    def dataset(self) -> str:
        """Its data set in the baseline files' spelling, for rows that do not carry one: the paper table's, else
        the recipe file's data.name, else ""."""
        paper = PAPER_TABLES.get(self.name.removesuffix("-smoke"))
        if paper:
            return paper[1]
        try:
            raw = parse_yaml(Path(self.file).read_text(encoding="utf-8", errors="replace"), str(self.file))
        except (TypeError, OSError, RecipeError):
            return ""
        data = raw.get("data") if isinstance(raw, dict) else None
        return dataset_name(str(data.get("name", ""))) if isinstance(data, dict) else ""

    def shown_file(self) -> str:
        """The recipe file, relative to the project where it lies inside it."""
        if self.file is None:
            return ""
        path = Path(self.file).resolve()
        return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def recipe_sources(manifest: RunIndex, compared: list[RunIndex] = ()) -> dict[str, RecipeSource]:
    """Per source label of the table (ours, each --compare run's), the recipe its rows came from."""
    return {label: RecipeSource(run.recipe, Path(run.source), recipe_hash(run))
            for label, run in [(OURS, manifest), *[(source_label(run), run) for run in compared]]}


def _listed(values: pd.Series) -> str:
    """The distinct recorded values, in order of first appearance, joined by ", "."""
    text = values.dropna().map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
    return ", ".join(dict.fromkeys(v for v in text if v not in ("", "nan")))


def _text(value) -> str:
    """A text cell: "" for nothing, whole numbers without ".0" (a thread count read back as a float)."""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:g}"
    return "" if value is None or value is pd.NA else str(value)


def _dates(values: pd.Series) -> str:
    days = sorted({str(v)[:10] for v in values.dropna() if str(v) not in ("", "nan")})
    return "" if not days else days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def _setting_provenance(rows: pd.DataFrame) -> dict:
    """One setting's provenance from its metrics rows (every seed, metric and NFE of it)."""
    jobs = rows.drop_duplicates("job") if "job" in rows else rows.iloc[:1]
    seconds = jobs.train_seconds.dropna() if "train_seconds" in jobs else pd.Series(dtype=float)
    record = {column: _listed(rows[column]) for column in ("dataset", "recipe", "code_version", "machine", "threads",
                                                            "torch", "train_machine", "train_threads", "train_torch")
              if column in rows}
    record.update(jobs=_listed(rows.get("job", pd.Series(dtype=str))), date=_dates(rows.get("date", pd.Series())),
                  seeds=_listed(jobs.seed.astype(int)) if "seed" in jobs else "",
                  train_seconds=seconds.sum() if len(seconds) else np.nan)
    trained_on = record.get("train_machine", "").lower()
    on_gpu = bool(trained_on) and all(any(word in name for word in GPU_NAMES) for name in trained_on.split(", "))
    record["gpu_hours"] = record["train_seconds"] / 3600 if on_gpu else np.nan  # one device per job counted
    return record


def provenance(rows: pd.DataFrame, recipes: dict[str, RecipeSource]) -> pd.DataFrame:
    """Per setting (SETTING keys) the provenance of the metrics rows that made it, with its source's recipe file
    and run hash where `recipes` knows them."""
    rows = rows.assign(setting=setting_label(rows))
    frame = pd.DataFrame([{**dict(zip(SETTING, key)), **_setting_provenance(group)}
                          for key, group in rows.groupby(SETTING, sort=False)])
    known = frame.source.map(recipes)
    frame["recipe_file"] = known.map(lambda recipe: recipe.shown_file() if isinstance(recipe, RecipeSource) else "")
    frame["recipe_hash"] = known.map(lambda recipe: recipe.run_hash if isinstance(recipe, RecipeSource) else "")
    return frame


def table_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics of a compiled table: FID and the columns named by a metric (not the paper's, a set's paired
    columns, "NAME FID", or provenance)."""
    named = [c for c in table.columns.difference([*TABLE_COLUMNS, "dataset", *PROVENANCE], sort=False)
             if " " not in c and not c.startswith("paper_")]
    order = {metric: i for i, metric in enumerate(METRIC_ORDER)}
    return sorted(["fid", *named], key=lambda metric: (order.get(metric, len(order)), metric))


def _run_rows(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The table's rows with a value of this metric (FID: or every run diverged), as page rows."""
    fid = metric == "fid"
    rows = table[table[metric].notna() | ((table.n_diverged > 0) if fid else False)]
    paper = rows.paper_fid if fid else rows.get(f"paper_{metric}", pd.Series(np.nan, index=rows.index))
    return rows.assign(metric=metric, set=rows.source, reference="", value=rows[metric],
                       std=rows.fid_std if fid else np.nan, n=rows.n if fid else rows[metric].notna().astype(int),
                       n_diverged=rows.n_diverged if fid else 0, paper=paper, paper_ratio=rows[metric] / paper,
                       fid_ratio=rows.fid_ratio if fid else np.nan,
                       # FID's 95% interval and its verdict against the paper (noise.py), where the table has them
                       ci_low=rows.get("fid_ci_low", np.nan) if fid else np.nan,
                       ci_high=rows.get("fid_ci_high", np.nan) if fid else np.nan,
                       vs_paper=rows.get("fid_vs_paper", "") if fid else "")


def _set_rows(baseline: BaselineSet, datasets: set[str], metric: str) -> pd.DataFrame:
    """A baseline set's rows on these data sets and this metric, as page rows (a saved set's provenance kept)."""
    rows = baseline.rows[baseline.rows.dataset.isin(datasets) & (baseline.rows.metric == metric)
                         & baseline.rows.nfe.notna()]
    setting = rows.setting if "setting" in rows else rows.table
    return rows.drop(columns=[c for c in ("setting", "date") if c in rows]).assign(
        set=baseline.name, reference=rows.source, method_label=rows.method, setting=setting.map(_text),
        guidance=rows.guidance.fillna(1.0), recipe_hash=rows.get("recipe_hash", ""), date=rows.get("date", ""),
        n=rows.get("n", 1), n_diverged=rows.get("n_diverged", 0))


def page_rows(table: pd.DataFrame, recipe: RecipeSource, sets: list[BaselineSet],
              origin: pd.DataFrame | None = None) -> pd.DataFrame:
    """The page's rows (PAGE_COLUMNS): per metric of the table, the rows of runs (with `origin`, the provenance per
    setting, where given; rows of a set brought in by --compare come from the set itself), then each set's."""
    metrics = table_metrics(table)
    table = table[~table.source.isin({baseline.name for baseline in sets})]
    if origin is not None and len(origin):
        keys = [c for c in SETTING if c in table and c in origin]
        table = table.merge(origin.drop(columns=[c for c in SETTING if c not in keys]), on=keys, how="left")
    dataset = table.get("dataset", pd.Series("", index=table.index)).fillna("").replace("", recipe.dataset())
    table = table.assign(dataset=dataset)
    parts = []
    for metric in metrics:
        parts.append(_run_rows(table, metric))
        parts += [_set_rows(baseline, set(dataset) - {""}, metric) for baseline in sets]
    parts = [part for part in parts if len(part)]
    rows = pd.concat(parts, ignore_index=True).reindex(columns=PAGE_COLUMNS) if parts else pd.DataFrame(
        columns=PAGE_COLUMNS)
    method = rows.method.replace(OLD_STAGE_NAMES)
    given = rows.family.map(lambda family: family if isinstance(family, str) and family else None)  # a set's
    rows["family"] = given.fillna(method.map(METHOD_FAMILIES)).fillna(OTHER_FAMILY)
    rows["method_label"] = rows.method_label.fillna(rows.method)
    for column in [c for c in PAGE_COLUMNS if c not in NUMERIC_COLUMNS]:
        rows[column] = rows[column].map(_text)
    return rows.astype({"nfe": int, "n": int, "n_diverged": int, "guidance": float})

"""The report's input: metrics rows of the evaluations a run made (its manifest lists them; nothing is planned
again), labelled with that run's recipe, variant and stage, in one pandas frame with every column the report
reads. Row constants that tables and plots share live here. It reads the manifest through the store's view of
it, which needs no method (and no torch): `scm-bench report` starts quickly."""
from pathlib import Path

import numpy as np
import pandas as pd

from .. import store
from ..recipe.text import RecipeError, parse_yaml
from ..store.runs import RunIndex, read_index

OURS = "ours"  # the source label of this recipe's rows; a --compare run's rows carry its name
# sigma_rel: the EMA length of a stage evaluated at several (evaluate_sigma_rel), as text ("" where not swept)
SETTING = ["source", "setting", "stage", "method", "size", "sampler", "nfe", "guidance", "sigma_rel"]
WIDE_METRICS = ("fid", "kid", "class_accuracy", "fd_dinov2")  # columns of rows written before the long format
ROW_DEFAULTS = {"variant": "", "stage": "", "size": "", "params_m": np.nan, "seed": 0, "sampler": "", "guidance": 1.0,
                "diverged": False, "grid": "", "train_seconds": np.nan, "num_samples": np.nan, "features": "",
                "reference": "", "reference_hash": "", "ema": "", "code_version": "", "date": "",
                "real_vs_real_half_fid": np.nan, "intermediate": False, "method_label": "",
                "train_compute": np.nan, "seconds_per_step": np.nan, "sigma_rel": np.nan, "ema_sweep": False,
                "fid_ci_low": np.nan, "fid_ci_high": np.nan}


def _melt_wide(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the earlier format (one column per metric) as long rows, so older runs still report."""
    metrics = [m for m in WIDE_METRICS if m in frame]
    keep = [c for c in frame.columns if c not in metrics]
    long = frame.melt(id_vars=keep, value_vars=metrics, var_name="metric", value_name="value")
    return long.dropna(subset=["value"])


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """A frame of metrics rows with every column the report reads (absent fields take their defaults). `base`:
    the row's job trained from scratch (its own parent): the reference other rows are compared with."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if "metric" not in frame:
        frame = _melt_wide(frame)
    for column, default in ROW_DEFAULTS.items():
        frame[column] = frame[column].fillna(default) if column in frame else default
    frame["teacher_job"] = frame.get("teacher_job", frame.job).fillna(frame.job)  # a root job is its own parent
    frame["method_label"] = frame.method_label.where(frame.method_label != "", frame.method)
    frame["base"] = frame.teacher_job == frame.job
    frame["sigma_rel"] = frame.sigma_rel.map(lambda v: "" if pd.isna(v) else f"{float(v):g}")  # a grouping key
    return frame.astype({"diverged": bool, "intermediate": bool, "size": str, "variant": str, "grid": str,
                         "guidance": float, "value": float, "nfe": int, "stage": str, "ema_sweep": bool})


def sampled_ema_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (or table rows) of the EMA each stage samples, without the other lengths of a sigma_rel sweep: what
    every figure but FID against sigma_rel shows."""
    return frame[~frame.ema_sweep.astype(bool)] if "ema_sweep" in frame else frame


def load_rows(paths) -> pd.DataFrame:
    """Every row of these metrics.json files, whatever settings made them."""
    rows = []
    for path in paths:
        rows += (store.read_json(path) or {}).get("rows", [])
    return rows_frame(rows)


def gather(manifest: RunIndex) -> pd.DataFrame:
    """The rows of every evaluation the run planned that has finished, labelled with the run's own recipe, variant
    and stage (an evaluation shared with another recipe is that recipe's too); empty when none has finished."""
    rows = []
    for job in manifest.plan.evaluate:
        metrics = store.read_json(job.path / "metrics.json")
        labels = {"recipe": manifest.recipe, "variant": job.variant, "stage": job.stage or job.train.stage,
                  "size": job.train.size}
        rows += [{**row, **labels} for row in (metrics or {}).get("rows", [])]
    return rows_frame(rows)


def recipe_name(path: Path) -> str:
    """The name a recipe file's runs go under: its `name:`, else its file name's stem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found; give a path such as recipes/digits.yaml")
    raw = parse_yaml(path.read_text(encoding="utf-8", errors="replace"), str(path))
    return str(raw.get("name", path.stem)) if isinstance(raw, dict) else path.stem


def run_name(name: str) -> str:
    """A run's name from what a user typed: a recipe's name, or a recipe file (its `name:`, else its stem)."""
    return recipe_name(Path(name)) if name.endswith((".yaml", ".yml")) else name


def find_manifest(name: str, runs_root: Path, smoke: bool = False) -> RunIndex:
    """What the run named NAME (or a recipe file's run) evaluated; `-smoke` with smoke."""
    recipe_name = run_name(name)
    recipe_name += "-smoke" if smoke and not recipe_name.endswith("-smoke") else ""
    manifest = read_index(runs_root, recipe_name)
    if manifest is None:
        raise RecipeError(f"no run of {recipe_name} under {runs_root}; run it first: scm-bench run "
                          f"recipes/{recipe_name.removesuffix('-smoke')}.yaml{' --smoke' if smoke else ''}")
    return manifest


def source_label(manifest: RunIndex) -> str:
    """How a --compare run's rows are labelled: its recipe's name."""
    return manifest.recipe.removesuffix("-smoke")


def gather_sources(manifest: RunIndex, runs_root: Path, compare=()) -> pd.DataFrame:
    """Our rows (source "ours") and each --compare run's rows (source: its recipe's name) in one frame."""
    parts = [gather(manifest).assign(source=OURS)]
    for name in compare:
        other = find_manifest(name, runs_root, manifest.smoke)
        if other.recipe != manifest.recipe:
            parts.append(gather(other).assign(source=source_label(other)))
    parts = [part for part in parts if len(part)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def setting_label(frame: pd.DataFrame) -> pd.Series:
    """The variant without the axes shown in their own columns or averaged over: seed, and size where the size
    column has it (so variants differing only by seed become one setting)."""
    setting = frame.variant.str.replace(r"(?:^|,)(?:seed|[\w.]*\.seed)=[^,]*", "", regex=True)
    without_size = setting.str.replace(r"(?:^|,)(?:size|network\.size)=[^,]*", "", regex=True)
    return without_size.where(frame["size"] != "", setting).str.strip(",")

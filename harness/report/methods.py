"""Methods compared (at equal compute in methods_digits), for a run that trains two or more few-step methods: a table
of each method ordered by its 1-step FID (mean ± std over seeds, with precision, recall, class accuracy, measured
seconds per training step and the training compute in forward-equivalents), and FID against training compute
(forward-equivalents, and measured seconds) per method, 1 and 2 steps."""
from pathlib import Path

import numpy as np
import pandas as pd

from .. import store
from .figures import NFE_LINES, finish_figure, line_style, log_axis, new_figure, styles, write_figure
from .noise import RULE, fid_intervals, versus_interval
from .render import markdown_table
from .rows import setting_label

FEW_STEPS = (1, 2)
METRICS = ("fid", "precision", "recall", "class_accuracy")  # per NFE, where the rows have them
GROUP = ["source", "setting", "stage", "method", "method_label"]


def _per_seed(frame: pd.DataFrame, during_training: bool = False) -> pd.DataFrame:
    """One row per (method's stage, setting, NFE, seed[, checkpoint step]) with each metric as a column; healthy
    rows of the final checkpoints (and of those evaluated during training)."""
    rows = frame[~frame.diverged & frame.nfe.isin(FEW_STEPS) & frame.metric.isin(METRICS)]
    rows = rows if during_training else rows[~rows.intermediate]
    rows = rows.assign(setting=setting_label(rows), checkpoint_step=rows.get("checkpoint_step", 0))
    index = [*GROUP, "nfe", "seed", "checkpoint_step"]
    wide = rows.pivot_table(index=index, columns="metric", values="value", aggfunc="first")
    cost = rows.groupby(index)[["train_compute", "seconds_per_step", "train_seconds"]].first()
    interval = rows[rows.metric == "fid"].groupby(index)[["fid_ci_low", "fid_ci_high"]].first()
    return wide.join(cost).join(interval).reset_index()


def comparison_table(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per method (stage and setting): mean and std over seeds of each metric at 1 and 2 NFE, seconds per step and
    compute; ordered by 1-step FID (methods without a 1-step row last, by 2-step FID). None with fewer than two
    few-step methods."""
    if frame.empty or "train_compute" not in frame:
        return None
    seeds = _per_seed(frame).drop(columns="checkpoint_step")
    if seeds.empty or seeds.method.nunique() < 2:
        return None
    columns = {}
    for nfe in FEW_STEPS:
        at = seeds[seeds.nfe == nfe].groupby(GROUP)
        for metric in (m for m in METRICS if m in seeds):
            columns[f"{metric}_{nfe}"] = at[metric].mean()
            columns[f"{metric}_{nfe}_std"] = at[metric].std()
        columns[f"n_{nfe}"] = at["fid"].count()
        columns[f"ci_low_{nfe}"], columns[f"ci_high_{nfe}"] = at["fid_ci_low"].first(), at["fid_ci_high"].first()
    table = _versus_best(pd.DataFrame(columns))
    runs = seeds.groupby(GROUP)
    table = table.join(runs[["train_compute", "seconds_per_step", "train_seconds"]].mean()).reset_index()
    table["_order"] = table.fid_1.fillna(np.inf)
    return table.sort_values(["_order", "fid_2"], kind="stable").drop(columns="_order").reset_index(drop=True)


def _versus_best(table: pd.DataFrame) -> pd.DataFrame:
    """Per NFE, each method against the one with the lowest mean FID: "best", "within noise" or "beyond noise"
    (their 95% intervals, noise.py: over seeds, else a single run's bootstrap interval)."""
    for nfe in FEW_STEPS:
        mean = table.get(f"fid_{nfe}")
        if mean is None or mean.isna().all():
            continue
        ci = fid_intervals(mean, table[f"fid_{nfe}_std"], table[f"n_{nfe}"], table.pop(f"ci_low_{nfe}"),
                           table.pop(f"ci_high_{nfe}"))
        best = mean.idxmin()
        table[f"vs_best_{nfe}"] = ["" if pd.isna(m) else "best" if i == best else
                                   versus_interval(ci.ci_low[i], ci.ci_high[i], ci.ci_low[best], ci.ci_high[best])
                                   for i, m in mean.items()]
    return table.drop(columns=[c for c in table if c.startswith("ci_")])


def _mean_std(mean, std, digits=3) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")


def shown_comparison(table: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({"method": table.method_label, "stage": table.stage, "setting": table.setting})
    for nfe in FEW_STEPS:
        for metric, title, digits in (("fid", "FID", 3), ("precision", "precision", 3), ("recall", "recall", 3),
                                      ("class_accuracy", "class acc.", 3)):
            if f"{metric}_{nfe}" in table:
                shown[f"{title} {nfe}-step"] = [_mean_std(m, s, digits) for m, s in
                                                zip(table[f"{metric}_{nfe}"], table[f"{metric}_{nfe}_std"])]
            if metric == "fid" and f"vs_best_{nfe}" in table:
                shown[f"vs best {nfe}-step"] = [{"beyond noise": "worse *"}.get(v, v) for v in table[f"vs_best_{nfe}"]]
    shown["seeds"] = table[[f"n_{nfe}" for nfe in FEW_STEPS]].max(axis=1).astype(int).astype(str)
    shown["s / step"] = table.seconds_per_step.map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    shown["train min"] = (table.train_seconds / 60).map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    shown["compute (k fwd-eq.)"] = (table.train_compute / 1e3).map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    return shown.drop(columns=[c for c in ("stage", "setting") if shown[c].eq(shown.method).all() or
                               shown[c].eq("").all()])


def compute_figure(seeds: pd.DataFrame, title: str):
    """FID against forward-equivalents (left) and measured training seconds (right) at each evaluated checkpoint,
    mean ± std over seeds; one line per method and step count (solid: 1 step, dashed: 2)."""
    points = seeds.dropna(subset=["fid", "train_compute", "train_seconds"])
    points = points[(points.fid > 0) & (points.train_compute > 0) & (points.train_seconds > 0)]
    if points.empty:  # rows written before training compute was recorded
        return None
    points = points.groupby([*GROUP, "nfe", "checkpoint_step"]).agg(
        fid=("fid", "mean"), fid_std=("fid", "std"), compute=("train_compute", "mean"),
        seconds=("train_seconds", "mean")).reset_index()
    fig = new_figure(12.0)
    axes = fig.subplots(1, 2)
    style = styles(points.method)
    for ax, x, label in ((axes[0], "compute", "training compute (forward-equivalents, log scale)"),
                         (axes[1], "seconds", "measured training time (s, log scale)")):
        for (source, method, name, nfe), line in points.groupby(["source", "method", "method_label", "nfe"]):
            line = line.sort_values("checkpoint_step")
            kwargs = line_style(style[method], NFE_LINES[nfe], source)
            kwargs.update(fillstyle="full" if nfe == 1 else "none")
            ax.errorbar(line[x], line.fid, yerr=line.fid_std.fillna(0), label=f"{name} {nfe}-step", **kwargs)
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="FID (log scale)")
        log_axis(ax.xaxis)
        log_axis(ax.yaxis)
        ax.grid(True, which="both", linewidth=0.3, color="0.8")
    finish_figure(fig, axes, f"{title}: FID against training compute (filled, solid: 1 step; hollow, dashed: 2)",
                  wspace=0.25)
    return fig


def write_comparison(frame: pd.DataFrame, out: Path, title: str) -> tuple[list[Path], str]:
    """From every row (checkpoints evaluated during training too): out/fid_vs_compute.{png,pdf} and
    out/comparison.csv where the run trains two or more few-step methods (else
    they are removed); returns the plots and the Markdown section for table.md ("" without a comparison)."""
    out = Path(out)
    table = comparison_table(frame)
    if table is None:
        (out / "comparison.csv").unlink(missing_ok=True)
        return write_figure(None, out, "fid_vs_compute"), ""
    paths = write_figure(compute_figure(_per_seed(frame, during_training=True), title), out, "fid_vs_compute")
    store.write_bytes_atomic(out / "comparison.csv", table.to_csv(index=False, float_format="%.4f").encode())
    compute = table.train_compute.dropna()
    same = len(compute) == len(table) and compute.max() <= 1.01 * compute.min()  # steps are whole: within 1%
    title = "Methods at equal compute" if same else "Few-step methods (their compute differs: see its column)"
    section = ["", f"## {title}, ordered by 1-step FID", "", markdown_table(shown_comparison(table)),
               "", f"Mean ± sample std over seeds. vs best: against the method with the lowest mean FID at that NFE; "
               f"{RULE}. s / step: measured seconds per training step (wall clock of the "
               "training job over its steps, on the machine that ran it); compute: steps x batch x the method's "
               "cost per step in forward passes (`scm-bench plan`'s count).", ""]
    return paths, "\n".join(section)

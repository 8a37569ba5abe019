"""FID over training, the shape of sCM Fig. 5: each student setting's FID at the checkpoints that
evaluation.during_training names and at its last step, the mean over seeds with the sample std as error bars; one
panel per stage and NFE. Runs that diverged have no curve; each panel counts them per setting."""
from pathlib import Path

import pandas as pd

from .. import store
from .figures import EXTRA_STYLES, fid_panel, finish_figure, new_figure, save_figure, source_colour
from .rows import OURS, SETTING, setting_label
from .tables import METHOD_ORDER

SETTING_STYLES = [("o", "#0072B2"), ("^", "#D55E00"), *EXTRA_STYLES]  # one marker and colour per curve
RUNS = ["source", "setting", "stage", "size"]  # what a run is counted under


def curve_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One point per report setting (source, setting, stage, method, size, sampler, NFE, guidance) and checkpoint
    step of the healthy runs trained from another: FID mean, std and n over seeds; empty unless some rows are
    intermediate."""
    if frame.empty or not frame.intermediate.any():
        return pd.DataFrame()
    fid = frame[(frame.metric == "fid") & ~frame.base & ~frame.diverged]
    fid = fid.assign(setting=setting_label(fid))
    grouped = fid.groupby([*SETTING, "method_label", "checkpoint_step"], sort=False).value
    return grouped.agg(fid="mean", fid_std="std", n="count").reset_index()


def diverged_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (source, setting, stage, size): runs (jobs) and how many of them diverged."""
    students = frame[~frame.base & ~frame.intermediate]
    students = students.assign(setting=setting_label(students))
    jobs = students.drop_duplicates(["source", "job"])
    return jobs.groupby(RUNS, sort=False).agg(
        runs=("job", "count"), diverged=("diverged", "sum")).reset_index()


def _name(source: str, setting: str, size: str, guidance: float | None = None) -> str:
    name = " ".join(part for part in (setting or "default", size) if part)
    name += "" if guidance is None else f" guidance {guidance:g}"
    return name + ("" if source == OURS else f" ({source})")


def _panel_text(counts: pd.DataFrame) -> str:
    lines = [f"{_name(src, s, z)}: {d}/{r}" for src, s, z, d, r in
             zip(counts.source, counts.setting, counts["size"], counts.diverged, counts.runs) if d]
    return "diverged runs\n" + "\n".join(lines) if lines else "no run diverged"


def training_curves_figure(points: pd.DataFrame, counts: pd.DataFrame, title: str):
    """FID against training step, one panel per (stage, NFE)."""
    order = points.drop_duplicates("stage").assign(_order=lambda p: p.method.map(METHOD_ORDER).fillna(99))
    stages = list(order.sort_values(["_order", "stage"], kind="stable").stage)
    labels = dict(zip(points.stage, points.method_label))
    panels = [(s, n) for s in stages for n in sorted(set(points.nfe[points.stage == s]))]
    fig = new_figure(3.4 * len(panels))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    several_scales = points.guidance.nunique() > 1
    curves = list(dict.fromkeys(zip(points.setting, points["size"])))
    styles = {curve: SETTING_STYLES[i % len(SETTING_STYLES)] for i, curve in enumerate(curves)}
    for ax, (stage, nfe) in zip(axes, panels):
        here = points[(points.stage == stage) & (points.nfe == nfe)]
        for (source, setting, size, guidance), line in here.groupby(["source", "setting", "size", "guidance"],
                                                                    sort=False):
            line = line.sort_values("checkpoint_step")
            marker, color = styles[(setting, size)]
            label = _name(source, setting, size, guidance if several_scales else None)
            ax.errorbar(line.checkpoint_step, line.fid, yerr=line.fid_std.fillna(0), label=label, marker=marker,
                        color=color if source == OURS else source_colour(source), markersize=5, capsize=2,
                        fillstyle="full" if source == OURS else "left")
        ax.text(0.03, 0.03, _panel_text(counts[counts.stage == stage]), transform=ax.transAxes, fontsize="x-small",
                va="bottom", ha="left", color="0.3")
        fid_panel(ax, "training step", f"{labels[stage]}, {nfe}-step")
    axes[0].set_ylabel("FID (log scale), mean ± std over seeds")
    finish_figure(fig, axes, f"{title}: FID over training", wspace=0.08)
    return fig


def write_training_curves(frame: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """out/fid_over_training.{png,pdf} from rows with intermediate checkpoints, and .csv with the points and the
    diverged counts; returns the figures written, and removes earlier ones when there is nothing to plot."""
    points = curve_points(frame)
    paths = [Path(out) / f"fid_over_training{suffix}" for suffix in (".png", ".pdf", ".csv")]
    if points.empty:
        for path in paths:
            path.unlink(missing_ok=True)
        return []
    counts = diverged_counts(frame)
    fig = training_curves_figure(points, counts, title)
    save_figure(fig, paths[0])
    save_figure(fig, paths[1])
    table = points.merge(counts, on=RUNS, how="outer")
    store.write_bytes_atomic(paths[2], table.to_csv(index=False, float_format="%.4f").encode())
    return paths[:2]

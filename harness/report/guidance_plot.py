"""FID, precision and recall against the guidance scale (sCM Fig. 7), for a run that samples a method at three or
more scales: one line per method and step count, in three panels side by side. VSD's trade (higher precision, lower
recall as the scale grows) reads across the panels."""
from pathlib import Path

import pandas as pd

from .figures import finish_figure, line_style, log_axis, new_figure, styles, write_figure

PANELS = (("fid", "FID"), ("precision", "precision"), ("recall", "recall"))
MIN_SCALES = 3


LINE = ["source", "setting", "stage", "method", "method_label", "sampler", "line"]


def guided_lines(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of each line sampled at MIN_SCALES guidance scales or more. A line is a stage's k-th smallest NFE at
    each scale: 1- and 2-step sampling are two lines, a teacher whose CFG doubles its NFE above scale 1 is one."""
    if table.empty:
        return table
    table = table.assign(line=table.groupby(["source", "setting", "stage", "sampler", "guidance"]).nfe.rank(
        method="dense"))
    scales = table.groupby(LINE).guidance.transform("nunique")
    return table[scales >= MIN_SCALES]


def _steps(nfe: pd.Series) -> str:
    values = sorted(nfe.unique())
    return f"{values[0]}-step" if len(values) == 1 and values[0] <= 2 else "NFE " + "/".join(map(str, values))


def guidance_figure(table: pd.DataFrame, title: str):
    """The figure, or None unless some setting is sampled at MIN_SCALES guidance scales or more."""
    lines = guided_lines(table)
    panels = [(column, label) for column, label in PANELS if column in lines and lines[column].notna().any()]
    if lines.empty or not panels:
        return None
    fig = new_figure(4.2 * len(panels))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    style = styles(lines.method)
    for (source, _, _, method, name, _, rank), line in lines.groupby(LINE, sort=False):
        line = line.sort_values("guidance")
        kwargs = line_style(style[method], "-" if rank == 1 else "--", source)
        kwargs.pop("capsize", None)
        for ax, (column, _) in zip(axes, panels):
            ax.plot(line.guidance, line[column], label=f"{name} {_steps(line.nfe)}", **kwargs)
    for ax, (column, label) in zip(axes, panels):
        ax.set(xlabel="guidance scale", ylabel=label + (" (log scale)" if column == "fid" else ""),
               yscale="log" if column == "fid" else "linear")
        if column == "fid":
            log_axis(ax.yaxis)
        ax.grid(True, linewidth=0.3, color="0.8")
    finish_figure(fig, axes, f"{title}: FID, precision and recall against guidance (as sCM Fig. 7)", wspace=0.3)
    return fig


def write_guidance_plot(table: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """out/metrics_vs_guidance.{png,pdf} where a setting is sampled over a guidance sweep; removed where not."""
    return write_figure(guidance_figure(table, title), out, "metrics_vs_guidance")

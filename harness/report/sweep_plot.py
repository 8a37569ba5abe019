"""FID against the value of a recipe's one numeric sweep axis (e.g. N = 16 .. 1024 steps of discrete-time consistency
training), one line per stage and step count of the jobs trained from another; an entry whose value is not a number
(a label such as `continuous`, or null) is drawn as a horizontal line of the same style, so the swept values read
against it."""
from pathlib import Path

import pandas as pd
from matplotlib.ticker import NullLocator

from .figures import NFE_LINES, finish_figure, log_axis, new_figure, styles, write_figure


def swept_values(table: pd.DataFrame) -> tuple[str, pd.Series, pd.Series] | None:
    """(axis, number per row (NaN for a value that is not one), the value as written) when every row of a job
    trained from another has one `axis=value` setting and two or more of the values are numbers; else None."""
    derived = table[~table.base.astype(bool)]
    parts = derived.setting.str.extract(r"^([\w.-]+)=([^,]*)$")
    if derived.empty or parts[0].isna().any() or parts[0].nunique() != 1:
        return None
    numbers = pd.to_numeric(parts[1], errors="coerce")
    if numbers.nunique() < 2:
        return None  # nothing to draw a line through
    return parts[0].iloc[0], numbers, parts[1]


def sweep_figure(table: pd.DataFrame, title: str):
    """The figure, or None unless the recipe sweeps one numeric axis over two values or more."""
    found = swept_values(table)
    if found is None:
        return None
    axis, values, written = found
    derived = table[~table.base.astype(bool)].assign(_x=values, _value=written).dropna(subset=["fid"])
    derived = derived[derived.nfe.isin(NFE_LINES)]
    fig = new_figure(9.0)
    ax = fig.subplots()
    style = styles(derived.method)
    for (method, label, nfe), line in derived.groupby(["method", "method_label", "nfe"], sort=False):
        marker, color = style[method]
        name = f"{label} {nfe}-step"
        swept = line.dropna(subset=["_x"]).sort_values("_x")
        if len(swept):
            ax.plot(swept._x, swept.fid, marker=marker, color=color, linestyle=NFE_LINES[nfe], label=name)
        for fid, value in zip(line[line._x.isna()].fid, line[line._x.isna()]._value):
            ax.axhline(fid, color=color, linestyle=NFE_LINES[nfe], linewidth=0.9, alpha=0.7,
                       label=f"{name}, {axis.rsplit('.', 1)[-1]} {value}")
    ticks = sorted(values.dropna().unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set(yscale="log", xlabel=f"{axis} (log scale)", ylabel="FID (log scale)")
    log_axis(ax.yaxis)
    ax.grid(True, which="both", linewidth=0.3, color="0.8")
    finish_figure(fig, [ax], f"{title}: FID against {axis.rsplit('.', 1)[-1]}", wspace=0.1)
    return fig


def write_sweep_plot(table: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """out/fid_vs_sweep.{png,pdf} where the recipe sweeps one numeric axis; removes them where it does not."""
    return write_figure(sweep_figure(table, title) if len(table) else None, out, "fid_vs_sweep")


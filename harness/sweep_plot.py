"""FID against the value of a recipe's one numeric sweep axis (e.g. stages.sct.discrete_steps: N = 16 .. 1024), one
line per student method and step count; an entry left unset (null: for discrete_steps, continuous time) is drawn as
a horizontal line of the same style, so the swept values read against it."""
from pathlib import Path

import pandas as pd

from .plots import LABELS, METHOD_STYLES, NFE_LINES, finish_figure, log_axis, new_figure, save_figure

UNSET = ("None", "null")


def swept_values(table: pd.DataFrame) -> tuple[str, pd.Series] | None:
    """(axis, value per row, NaN where unset) when every student row's setting is one `axis=number-or-null`;
    else None."""
    students = table[table.method != "teacher"]
    parts = students.setting.str.extract(r"^([\w.]+)=([^,]*)$")
    if students.empty or parts[0].isna().any() or parts[0].nunique() != 1:
        return None
    numbers = pd.to_numeric(parts[1].where(~parts[1].isin(UNSET)), errors="coerce")
    if numbers.isna().sum() != parts[1].isin(UNSET).sum() or numbers.nunique() < 2:
        return None  # a value that is neither a number nor unset, or nothing to draw a line through
    return parts[0].iloc[0], numbers


def sweep_figure(table: pd.DataFrame, title: str):
    """The figure, or None unless the recipe sweeps one numeric axis over two values or more."""
    from matplotlib.ticker import NullLocator

    found = swept_values(table)
    if found is None:
        return None
    axis, values = found
    students = table[table.method != "teacher"].assign(_x=values).dropna(subset=["fid"])
    students = students[students.nfe.isin(NFE_LINES)]
    fig = new_figure(9.0)
    ax = fig.subplots()
    for (method, nfe), line in students.groupby(["method", "nfe"], sort=False):
        marker, color = METHOD_STYLES.get(method, ("o", "0.3"))
        name = f"{LABELS.get(method, method)} {nfe}-step"
        swept = line.dropna(subset=["_x"]).sort_values("_x")
        ax.plot(swept._x, swept.fid, marker=marker, color=color, linestyle=NFE_LINES[nfe], label=name)
        for fid in line[line._x.isna()].fid:
            ax.axhline(fid, color=color, linestyle=NFE_LINES[nfe], linewidth=0.9, alpha=0.7,
                       label=f"{name}, {axis.rsplit('.', 1)[-1]} unset")
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
    paths = [Path(out) / "fid_vs_sweep.png", Path(out) / "fid_vs_sweep.pdf"]
    fig = sweep_figure(table, title) if len(table) else None
    for path in paths:
        if fig is None:
            path.unlink(missing_ok=True)
        else:
            save_figure(fig, path)
    return paths if fig is not None else []


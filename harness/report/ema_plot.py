"""FID against the EMA length sigma_rel (as EDM2 Fig. 5 reads its post-hoc EMA sweeps), for stages evaluated at
several lengths (`evaluate_sigma_rel:` in their `ema:`; tracked EMAs or reconstructed post hoc): one panel per stage
and size, one line per NFE (and guidance scale where there are several); a dotted vertical line marks the length the
stage samples."""
from pathlib import Path

import pandas as pd

from .figures import EXTRA_STYLES, curve_label, fid_panel, finish_figure, line_style, new_figure, styles, write_figure

LINESTYLES = ["-", "--", "-.", ":"]  # one per line of a panel, beside its marker


def swept_points(table: pd.DataFrame) -> pd.DataFrame:
    """The table rows of stages evaluated at two sigma_rel or more, with the length as a number (`x`)."""
    if "sigma_rel" not in table:
        return table.iloc[:0]
    swept = table[table.sigma_rel != ""].dropna(subset=["fid"])
    lengths = swept.groupby(["source", "setting", "stage", "size"]).sigma_rel.transform("nunique")
    swept = swept[lengths >= 2]
    return swept.assign(x=swept.sigma_rel.astype(float))


def sigma_rel_figure(table: pd.DataFrame, title: str):
    """The figure, or None unless some stage was evaluated at two EMA lengths or more."""
    points = swept_points(table)
    if points.empty:
        return None
    panels = list(dict.fromkeys(zip(points.stage, points["size"])))
    fig = new_figure(max(6.0, 4.2 * len(panels)))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    several_scales = points.guidance.nunique() > 1
    for ax, (stage, size) in zip(axes, panels):
        here = points[(points.stage == stage) & (points["size"] == size)]
        palette = [styles(here.method)[here.method.iloc[0]], *EXTRA_STYLES]
        for i, ((source, setting, nfe, guidance), line) in enumerate(
                here.groupby(["source", "setting", "nfe", "guidance"], sort=True)):
            line = line.sort_values("x")
            kwargs = line_style(palette[i % len(palette)], LINESTYLES[i % len(LINESTYLES)], source)
            kwargs.pop("capsize", None)
            label = curve_label(source, setting, f"NFE {nfe}" + (f", guidance {guidance:g}" if several_scales else ""))
            ax.plot(line.x, line.fid, label=label, **kwargs)
        for x in sorted(set(here.x[~here.ema_sweep.astype(bool)])):
            ax.axvline(x, color="0.5", linestyle=":", linewidth=0.9, label="sampled EMA's sigma_rel")
        fid_panel(ax, "EMA length sigma_rel", " ".join(filter(None, (stage, size))))
    axes[0].set_ylabel("FID (log scale)")
    finish_figure(fig, axes, f"{title}: FID against the EMA length", wspace=0.08)
    return fig


def write_sigma_rel_plot(table: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """out/fid_vs_sigma_rel.{png,pdf} where a stage was evaluated at several EMA lengths; removed where not."""
    return write_figure(sigma_rel_figure(table, title) if len(table) else None, out, "fid_vs_sigma_rel")

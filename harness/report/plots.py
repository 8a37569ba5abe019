"""The report's figures against size and NFE. fid_vs_size is like sCM Fig. 6: FID and FID / teacher FID against
model size (S..XXL), 1 and 2 steps. fid_vs_nfe: FID against NFE per stage (one panel per model size). Ours: lines
with filled markers; the paper: hollow markers; a --compare run: its own colour, half-filled markers. A job trained
from scratch (a diffusion teacher) is the reference: a dotted line, and the ratio panel's 1."""
import math
from pathlib import Path

import pandas as pd
from matplotlib.ticker import NullLocator

from .figures import (METHOD_LINES, NFE_LINES, curve_label, draw_curve, finish_figure, line_style, log_axis,
                      new_figure, styles, write_figure)
from .paper import ODE_FAMILY, PAPER_METHODS
from .tables import SIZES

CURVE = ["stage", "method", "source", "setting"]  # what one curve shares


def _names(frame: pd.DataFrame) -> pd.Series:
    """The legend name of each row's stage: its method's label, and the stage where it is not named after it."""
    return frame.method_label.where(frame.stage == frame.method, frame.method_label + " (" + frame.stage + ")")


def best_points(table: pd.DataFrame) -> pd.DataFrame:
    """One point per (source, setting, stage, size, NFE): the guidance scale with the lowest mean FID, as the paper
    reports each model at its best scale (sCM Table 6). Settings whose runs all diverged have no point."""
    points = table.dropna(subset=["fid"]).sort_values("fid", kind="stable")
    points = points.drop_duplicates(["source", "setting", "stage", "size", "nfe"])
    return points.assign(name=_names(points), base=points.base.astype(bool))


def paper_points(paper: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """The paper's FID of the methods we ran (our method names), with FID / teacher FID at the same size."""
    ours = {theirs: mine for mine, theirs in PAPER_METHODS.items() if mine in set(points.method)}
    fid = paper[(paper.metric == "fid") & paper.method.isin(ours)]
    names = dict(zip(points.method, points.name))
    fid = fid.assign(method=fid.method.map(ours), fid=fid.value, setting="", source="paper",
                     base=fid.family == ODE_FAMILY)
    fid = fid.assign(stage=fid.method, name=fid.method.map(names))
    teacher = fid[fid.base].groupby("size").fid.first()
    return fid.assign(fid_ratio=fid.fid / fid["size"].map(teacher))


def _curves(points: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Ours, the --compare sources' and the paper's points in drawing (and legend) order: reference first, then by
    stage and source."""
    curves = pd.concat([points, paper], ignore_index=True)
    sources = {source: i for i, source in enumerate(dict.fromkeys(["ours", *points.source, "paper"]))}
    order = curves.assign(_base=~curves.base.astype(bool), _source=curves.source.map(sources))
    return order.sort_values(["_base", "stage", "nfe", "_source"], kind="stable").drop(columns=["_base", "_source"])


def _key(curves: pd.DataFrame) -> str:
    """How to tell the sources apart, where the paper's points are drawn."""
    return " (filled: ours, hollow: paper)" if len(curves) and (curves.source == "paper").any() else ""


def _size_ticks(ax, positions: dict, params: dict) -> None:
    ax.set_xticks(list(positions.values()),
                  [f"{s}\n{params[s]:.0f}M" if params.get(s, 0) >= 10 else f"{s}\n{params[s]:.2g}M" if s in params
                   else s for s in positions])  # toy networks: 0.32M, not 0M
    ax.set_xlim(-0.4, len(positions) - 0.6)


def scaling_figure(points: pd.DataFrame, paper: pd.DataFrame, title: str):
    """FID and FID / teacher FID against model size; None unless our points span two sizes or more."""
    sizes = set(points["size"]) - {""}
    if len(sizes) < 2:
        return None
    paper = paper[paper["size"].isin(SIZES)]
    every = sizes | set(paper["size"])
    params = {**paper.groupby("size").params_m.first().dropna(), **points.groupby("size").params_m.first().dropna()}
    others = sorted(every - set(SIZES), key=lambda s: (params.get(s, math.inf), s))  # other sizes by parameters
    positions = {s: i for i, s in enumerate([s for s in SIZES if s in every] + others)}
    fig = new_figure(10)
    ax_fid, ax_ratio = fig.subplots(1, 2)
    style = styles(points.method)
    curves = _curves(points, paper)
    shown = curves[(curves.base | curves.nfe.isin(NFE_LINES)) & curves["size"].isin(positions)]
    shown = shown.assign(_nfe=shown.nfe.where(~shown.base, 0), _x=shown["size"].map(positions))
    for (*_, nfe), line in shown.groupby([*CURVE, "_nfe"], sort=False):
        line = line.sort_values("_x")
        base = bool(line.base.iloc[0])
        kwargs = line_style(style[line.method.iloc[0]], ":" if base else NFE_LINES[nfe], line.source.iloc[0])
        label = curve_label(line.source.iloc[0], line.setting.iloc[0], line["name"].iloc[0], nfe)
        draw_curve(ax_fid, line, line._x, "fid", kwargs, label)
        if not base:
            draw_curve(ax_ratio, line, line._x, "fid_ratio", kwargs, label)
    for ax in (ax_fid, ax_ratio):
        _size_ticks(ax, positions, params)
        ax.set_xlabel("model size (parameters)")
        ax.grid(True, which="both", linewidth=0.3, color="0.8")
    ax_fid.set(yscale="log", ylabel="FID (log scale)", title="FID")
    log_axis(ax_fid.yaxis)
    ax_ratio.axhline(1.0, color="0.5", linewidth=0.8)
    ax_ratio.set(ylabel="FID / teacher FID", title="FID relative to the teacher")
    finish_figure(fig, (ax_fid, ax_ratio), f"{title}: FID against model size{_key(paper)}", wspace=0.25)
    return fig


def nfe_figure(points: pd.DataFrame, paper: pd.DataFrame, title: str):
    """FID against NFE per stage, one panel per model size; None unless some job was trained from another."""
    if points.base.all():
        return None
    present = set(points["size"])
    sizes = [s for s in ("", *SIZES) if s in present] + sorted(present - {"", *SIZES})
    fig = new_figure(max(6.0, 3.2 * len(sizes)))
    axes = fig.subplots(1, len(sizes), sharey=True, squeeze=False)[0]
    style = styles(points.method)
    curves = _curves(points, paper)
    for ax, size in zip(axes, sizes):
        here = curves[curves["size"] == size]
        for _, line in here.groupby(CURVE, sort=False):
            line = line.sort_values("nfe")
            method, source = line.method.iloc[0], line.source.iloc[0]
            # a reference is usually one point (its solver budget); sampled at several NFEs, a dotted line
            linestyle = ":" if line.base.iloc[0] else METHOD_LINES.get(method, "-.")
            linestyle = linestyle if len(line) > 1 or not line.base.iloc[0] else "none"
            draw_curve(ax, line, line.nfe, "fid", line_style(style[method], linestyle, source),
                       curve_label(source, line.setting.iloc[0], line["name"].iloc[0]))
        nfes = sorted(set(here.nfe))
        ax.set_xscale("log", base=2)
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set(yscale="log", xlabel="NFE (log scale)", title=f"size {size}" if size else "")
        log_axis(ax.yaxis)
        ax.grid(True, which="both", linewidth=0.3, color="0.8")
    axes[0].set_ylabel("FID (log scale)")
    finish_figure(fig, axes, f"{title}: FID against NFE{_key(curves)}", wspace=0.08)
    return fig


def write_plots(table: pd.DataFrame, paper: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """out/fid_vs_size and out/fid_vs_nfe (.png and .pdf) where there is something to plot; returns the paths written
    and removes earlier ones that no longer apply."""
    points = best_points(table)
    theirs = paper_points(paper, points)
    written = []
    for name, make in (("fid_vs_size", scaling_figure), ("fid_vs_nfe", nfe_figure)):
        written += write_figure(make(points, theirs, title) if len(points) else None, out, name)
    return written

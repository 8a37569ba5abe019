"""The report's figures. fid_vs_size is like sCM Fig. 6: FID and FID / teacher FID against model size (S..XXL), 1 and
2 steps, sCT and sCD. fid_vs_nfe: FID against NFE per method (one panel per size). Ours: lines with filled markers;
the paper: hollow markers; a --compare recipe: half-filled markers. Markers and line styles tell curves apart, so
the figures read in grayscale. PNG and PDF, through matplotlib's Figure API (Agg; pyplot's GUI state never loads)."""
import io
import math
from pathlib import Path

import pandas as pd

from . import store
from .report import OURS, PAPER_METHODS, SIZES

LABELS = {"teacher": "teacher", "sct": "sCT", "scd": "sCD"}
# (marker, colour) per method; Okabe-Ito colours of distinct lightness, but the marker is what tells them apart
METHOD_STYLES = {"teacher": ("s", "black"), "sct": ("o", "#0072B2"), "scd": ("^", "#D55E00")}
EXTRA_STYLES = [("D", "#009E73"), ("v", "#CC79A7"), ("P", "#E69F00"), ("X", "#56B4E9"), ("<", "#666666")]
# fixed margins in inches: constrained layout took a third of the drawing time, and these figures have one shape
PANEL_HEIGHT, TOP, BOTTOM, LEFT, RIGHT, LEGEND_ROW = 3.0, 0.7, 0.85, 0.75, 0.2, 0.21
NFE_LINES = {1: "-", 2: "--"}  # Fig. 6 plots 1- and 2-step students
METHOD_LINES = {"teacher": ":", "sct": "-", "scd": "--"}  # fid_vs_nfe: one line per method


def best_points(table: pd.DataFrame) -> pd.DataFrame:
    """One point per (source, setting, method, size, NFE): the guidance scale with the lowest mean FID, as the paper
    reports each model at its best scale (sCM Table 6). Settings whose runs all diverged have no point."""
    points = table.dropna(subset=["fid"]).sort_values("fid", kind="stable")
    return points.drop_duplicates(["source", "setting", "method", "size", "nfe"])


def paper_points(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's FID of the teacher, sCT and sCD (our method names), with FID / teacher FID at the same size."""
    fid = paper[(paper.metric == "fid") & paper.method.isin(PAPER_METHODS.values())]
    fid = fid.assign(method=fid.method.map({theirs: ours for ours, theirs in PAPER_METHODS.items()}),
                     fid=fid.value, setting="", source="paper")
    teacher = fid[fid.method == "teacher"].groupby("size").fid.first()
    return fid.assign(fid_ratio=fid.fid / fid["size"].map(teacher))


def _styles(methods) -> dict:
    extra = sorted(set(methods) - set(METHOD_STYLES))
    return {**METHOD_STYLES, **{m: EXTRA_STYLES[i % len(EXTRA_STYLES)] for i, m in enumerate(extra)}}


def _line(style: tuple, linestyle: str, source: str) -> dict:
    """Keyword arguments of one curve: ours filled, a --compare source half-filled; the paper hollow and larger, on a
    thin line of the same style (so its 1- and 2-step points differ in grayscale too)."""
    marker, color = style
    if source == "paper":
        return dict(marker=marker, color=color, linestyle=linestyle, linewidth=0.7, markerfacecolor="none",
                    markersize=9, markeredgewidth=1.3)
    return dict(marker=marker, color=color, linestyle=linestyle, markersize=6, capsize=2,
                fillstyle="full" if source == OURS else "left")


def _label(source: str, setting: str, method: str, nfe=None) -> str:
    name = LABELS.get(method, method)
    name = name if name == source else f"{source} {name}"
    return name + (f" {nfe}-step" if nfe else "") + (f" ({setting})" if setting else "")


def _curves(points: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Ours, the --compare sources' and the paper's points in drawing (and legend) order: by method, then source."""
    curves = pd.concat([points, paper], ignore_index=True)
    sources = {source: i for i, source in enumerate(dict.fromkeys([OURS, *points.source, "paper"]))}
    order = curves.assign(_method=curves.method.map({m: i for i, m in enumerate(METHOD_STYLES)}).fillna(9),
                          _source=curves.source.map(sources))
    return order.sort_values(["_method", "method", "nfe", "_source"], kind="stable").drop(columns=["_method", "_source"])


def log_axis(axis) -> None:
    """Plain numbers on a log axis, each labelled: 1, 2, 3, 5 times a power of ten (2, 3, 5, 10, 20, ...), not
    2 x 10^0; no other ticks (ticks are most of the drawing time)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    axis.set_major_locator(LogLocator(subs=(1, 2, 3, 5)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_locator(NullLocator())


def _curve(ax, points: pd.DataFrame, x, y: str, kwargs: dict, label: str) -> None:
    """A curve, with error bars of the std over seeds where a point has several (the paper's points have none)."""
    spread = points.fid_std.fillna(0).to_numpy() if y == "fid" and "fid_std" in points else None
    if spread is None or not spread.any():
        ax.plot(x, points[y], label=label, **{k: v for k, v in kwargs.items() if k != "capsize"})
        return
    ax.errorbar(x, points[y], yerr=spread, label=label, **kwargs)


def finish_figure(fig, axes, title: str, wspace: float) -> None:
    """Title, one legend below the panels (each label once), and margins fixed in inches."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    ncols = min(4, len(handles))
    bottom = BOTTOM + math.ceil(len(handles) / ncols) * LEGEND_ROW
    width, height = fig.get_figwidth(), TOP + PANEL_HEIGHT + bottom
    fig.set_size_inches(width, height)
    fig.legend(list(handles.values()), list(handles), loc="lower center", bbox_to_anchor=(0.5, 0.05 / height),
               ncols=ncols, fontsize="small", frameon=False)
    fig.subplots_adjust(left=LEFT / width, right=1 - RIGHT / width, top=1 - TOP / height, bottom=bottom / height,
                        wspace=wspace)
    fig.suptitle(title, y=1 - 0.1 / height, va="top")


def _key(curves: pd.DataFrame) -> str:
    """How to tell the sources apart, where the paper's points are drawn."""
    return " (filled: ours, hollow: paper)" if len(curves) and (curves.source == "paper").any() else ""


def _size_ticks(ax, positions: dict, params: dict) -> None:
    ax.set_xticks(list(positions.values()),
                  [f"{s}\n{params[s]:.0f}M" if params.get(s, 0) >= 10 else f"{s}\n{params[s]:.2g}M" if s in params
                   else s for s in positions])  # toy networks: 0.32M, not 0M
    ax.set_xlim(-0.4, len(positions) - 0.6)


def new_figure(width: float):
    from matplotlib.figure import Figure  # loaded only when there is a figure to draw

    return Figure(figsize=(width, PANEL_HEIGHT))  # the height is set with the legend (finish_figure)


def scaling_figure(points: pd.DataFrame, paper: pd.DataFrame, title: str):
    """FID and FID / teacher FID against model size; None unless our points span two sizes or more."""
    sizes = set(points["size"]) - {""}
    if len(sizes) < 2:
        return None
    paper = paper[paper["size"].isin(SIZES) & paper.method.isin(points.method)]
    every = sizes | set(paper["size"])
    params = {**paper.groupby("size").params_m.first().dropna(), **points.groupby("size").params_m.first().dropna()}
    others = sorted(every - set(SIZES), key=lambda s: (params.get(s, math.inf), s))  # other sizes by parameters
    positions = {s: i for i, s in enumerate([s for s in SIZES if s in every] + others)}
    fig = new_figure(10)
    ax_fid, ax_ratio = fig.subplots(1, 2)
    styles = _styles(points.method)
    curves = _curves(points, paper)
    shown = curves[((curves.method == "teacher") | curves.nfe.isin(NFE_LINES)) & curves["size"].isin(positions)]
    shown = shown.assign(_nfe=shown.nfe.where(shown.method != "teacher", 0), _x=shown["size"].map(positions))
    for (method, nfe, source, setting), line in shown.groupby(["method", "_nfe", "source", "setting"], sort=False):
        line = line.sort_values("_x")
        kwargs = _line(styles[method], ":" if method == "teacher" else NFE_LINES[nfe], source)
        label = _label(source, setting, method, nfe)
        _curve(ax_fid, line, line._x, "fid", kwargs, label)
        if method != "teacher":
            _curve(ax_ratio, line, line._x, "fid_ratio", kwargs, label)
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
    """FID against NFE per method, one panel per model size; None without students."""
    if not (points.method != "teacher").any():
        return None
    present = set(points["size"])
    sizes = [s for s in ("", *SIZES) if s in present] + sorted(present - {"", *SIZES})
    fig = new_figure(max(6.0, 3.2 * len(sizes)))
    axes = fig.subplots(1, len(sizes), sharey=True, squeeze=False)[0]
    styles = _styles(points.method)
    from matplotlib.ticker import NullLocator

    curves = _curves(points, paper[paper.method.isin(points.method)])
    for ax, size in zip(axes, sizes):
        here = curves[curves["size"] == size]
        for (method, source, setting), line in here.groupby(["method", "source", "setting"], sort=False):
            line = line.sort_values("nfe")
            # the teacher is usually one point (its solver budget); sampled at several NFEs, a dotted line
            linestyle = METHOD_LINES.get(method, "-.") if method != "teacher" or len(line) > 1 else "none"
            _curve(ax, line, line.nfe, "fid", _line(styles[method], linestyle, source),
                   _label(source, setting, method))
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


def save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    # no creation date in the PDF, so an unchanged report writes the same bytes
    fig.savefig(buffer, format=path.suffix[1:], dpi=150, metadata={"CreationDate": None} if path.suffix == ".pdf"
                else None)
    store.write_bytes_atomic(path, buffer.getvalue())


def write_plots(table: pd.DataFrame, paper: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """out/fid_vs_size and out/fid_vs_nfe (.png and .pdf) where there is something to plot; returns the paths written
    and removes earlier ones that no longer apply."""
    points, theirs = best_points(table), paper_points(paper)
    written = []
    for name, make in (("fid_vs_size", scaling_figure), ("fid_vs_nfe", nfe_figure)):
        fig = make(points, theirs, title) if len(points) else None
        for path in (Path(out) / f"{name}.png", Path(out) / f"{name}.pdf"):
            if fig is None:
                path.unlink(missing_ok=True)
            else:
                save_figure(fig, path)
                written.append(path)
    return written

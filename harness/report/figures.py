"""What every figure of the report shares: the style of each method and source (markers and line styles tell
curves apart, so figures read in grayscale), fixed margins with one legend below the panels, log axes with plain
labels, and saving (PNG and PDF, written atomically) through matplotlib's Figure API (Agg; pyplot's GUI state never
loads)."""
import io
import math
import zlib
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from .. import store
from .rows import OURS

# (marker, colour) per method; Okabe-Ito colours of distinct lightness, but the marker is what tells them apart
METHOD_STYLES = {"diffusion": ("s", "black"), "sct": ("o", "#0072B2"), "scd": ("^", "#D55E00"),
                 "discrete-ct": ("D", "#009E73")}
EXTRA_STYLES = [("v", "#CC79A7"), ("P", "#E69F00"), ("X", "#56B4E9"), ("<", "#666666"), ("d", "#009E73")]
SOURCE_COLOURS = ["#882255", "#44AA99", "#999933", "#AA4499", "#332288"]  # Tol's muted: none of the above
# fixed margins in inches: constrained layout took a third of the drawing time, and these figures have one shape
PANEL_HEIGHT, TOP, BOTTOM, LEFT, RIGHT, LEGEND_ROW = 3.0, 0.7, 0.85, 0.75, 0.2, 0.21
NFE_LINES = {1: "-", 2: "--"}  # Fig. 6 plots 1- and 2-step students
METHOD_LINES = {"sct": "-", "scd": "--", "discrete-ct": "-."}  # fid_vs_nfe: one line per method


def styles(methods) -> dict:
    extra = sorted(set(methods) - set(METHOD_STYLES))
    return {**METHOD_STYLES, **{m: EXTRA_STYLES[i % len(EXTRA_STYLES)] for i, m in enumerate(extra)}}


def source_colour(source: str) -> str:
    """A --compare source's own colour (the same in every figure: from its name), none of the methods' colours."""
    return SOURCE_COLOURS[zlib.crc32(source.encode()) % len(SOURCE_COLOURS)]


def line_style(style: tuple, linestyle: str, source: str) -> dict:
    """Keyword arguments of one curve: ours filled in the method's colour; a --compare source in its own colour,
    with the method's marker half-filled; the paper hollow and larger, on a thin line of the same
    style (so its 1- and 2-step points differ in grayscale too). Legend entries name the source (curve_label)."""
    marker, color = style
    if source == "paper":
        return dict(marker=marker, color=color, linestyle=linestyle, linewidth=0.7, markerfacecolor="none",
                    markersize=9, markeredgewidth=1.3)
    if source != OURS:
        return dict(marker=marker, color=source_colour(source), linestyle=linestyle, markersize=6, capsize=2,
                    fillstyle="left")
    return dict(marker=marker, color=color, linestyle=linestyle, markersize=6, capsize=2, fillstyle="full")


def curve_label(source: str, setting: str, name: str, nfe=None) -> str:
    """A curve's legend entry: its source (unless ours), its method's name, the step count and the setting."""
    name = name if source == OURS else f"{source} {name}"
    return name + (f" {nfe}-step" if nfe else "") + (f" ({setting})" if setting else "")


def log_axis(axis) -> None:
    """Plain numbers on a log axis, each labelled: 1, 2, 3, 5 times a power of ten (2, 3, 5, 10, 20, ...), not
    2 x 10^0; no other ticks (ticks are most of the drawing time)."""
    axis.set_major_locator(LogLocator(subs=(1, 2, 3, 5)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_locator(NullLocator())


def fid_panel(ax, xlabel: str, title: str) -> None:
    """A panel of FID on a log axis: its labels, plain log ticks, a light grid."""
    ax.set(yscale="log", xlabel=xlabel, title=title)
    log_axis(ax.yaxis)
    ax.grid(True, which="both", linewidth=0.3, color="0.8")


def draw_curve(ax, points: pd.DataFrame, x, y: str, kwargs: dict, label: str) -> None:
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


def new_figure(width: float):
    return Figure(figsize=(width, PANEL_HEIGHT))  # the height is set with the legend (finish_figure)


def write_figure(fig, out: Path, name: str) -> list[Path]:
    """out/NAME.png and .pdf of a figure, or, for None (nothing to plot), earlier ones removed; the paths written."""
    paths = [Path(out) / f"{name}.png", Path(out) / f"{name}.pdf"]
    for path in paths:
        if fig is None:
            path.unlink(missing_ok=True)
        else:
            save_figure(fig, path)
    return paths if fig is not None else []


def save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    # no creation date in the PDF, so an unchanged report writes the same bytes
    fig.savefig(buffer, format=path.suffix[1:], dpi=150, metadata={"CreationDate": None} if path.suffix == ".pdf"
                else None)
    store.write_bytes_atomic(path, buffer.getvalue())

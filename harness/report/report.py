"""`scm-bench report`: a run's metrics rows (from its manifest) beside the sCM paper's numbers, under
results/<recipe>/: table.md, table.csv, table.tex, the sample grids (samples/) and the plots (Fig. 6-like FID
against size, FID against NFE, FID against a swept number, FID over training, FID against compute, FID /
precision / recall against guidance)."""
from pathlib import Path

import pandas as pd

from .. import store
from ..store.runs import RunIndex
from .paper import load_baselines, paper_rows
from .plots import write_plots
from .guidance_plot import write_guidance_plot
from .methods import write_comparison
from .render import caption, copy_grids, latex_table, markdown_page
from .rows import gather_sources
from .sweep_plot import write_sweep_plot
from .tables import aggregate, compile_table, display_table, unmatched_paper_rows, with_paper
from .training_curves import write_training_curves


def report_from_rows(frame: pd.DataFrame, recipe_name: str, results_root: Path,
                     baselines: pd.DataFrame | None = None) -> pd.DataFrame:
    """Everything write_report does after gathering: tables, grids and plots of these rows under results/<name>/."""
    paper = paper_rows(recipe_name, load_baselines() if baselines is None else baselines)
    curves = frame
    frame = frame[~frame.intermediate]  # tables show each run at its last step; the curves at every evaluated one
    long = with_paper(aggregate(frame), paper)
    table = compile_table(long)
    out = Path(results_root) / recipe_name
    table["grid"] = copy_grids(table, out)  # the copy, relative to results/<recipe>/
    compared, comparison = write_comparison(curves, out, recipe_name)
    plots = (write_plots(table, paper, out, recipe_name) + write_sweep_plot(table, out, recipe_name)
             + write_training_curves(curves, out, recipe_name) + write_guidance_plot(table, out, recipe_name)
             + compared)
    shown = display_table(table)
    unmatched = unmatched_paper_rows(paper, long)
    store.write_bytes_atomic(out / "table.csv", table.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes_atomic(out / "table.tex", latex_table(shown, caption(recipe_name, paper)).encode())
    store.write_bytes_atomic(out / "table.md",
                             (markdown_page(recipe_name, shown, table.grid, frame, paper, unmatched, plots)
                              + comparison).encode())
    return table


def write_report(manifest: RunIndex, runs_root: Path, results_root: Path, compare: list[str] = ()):
    """Write results/<recipe>/table.{md,csv,tex}, sample grids and plots; return the compiled table (one row per
    setting), or None when no evaluation of the run (or of a --compare run) has finished."""
    frame = gather_sources(manifest, runs_root, compare)
    if frame.empty:
        return None
    return report_from_rows(frame, manifest.recipe, results_root)

"""`scm-bench report`: a run's metrics rows (from its manifest) beside the sCM paper's numbers, under
results/<recipe>/: table.md, table.csv, table.tex, the sample grids (samples/) and the plots (Fig. 6-like FID
against size, FID against NFE, FID against a swept number, FID over training, FID against compute, FID /
precision / recall against guidance)."""
from pathlib import Path

import pandas as pd

from .. import store
from ..store.runs import RunIndex
from .baseline_sets import BaselineSet, resolve_compare
from .freeze import label_datasets
from .paper import BASELINES, load_baselines, paper_rows
from .plots import write_plots
from .guidance_plot import write_guidance_plot
from .methods import write_comparison
from .page import write_recipe_page
from .page_rows import RecipeSource, recipe_sources
from .render import caption, copy_grids, latex_table, markdown_page
from .ema_plot import write_sigma_rel_plot
from .rows import gather_sources, sampled_ema_rows
from .set_pairing import our_datasets, with_set_rows, with_set_values
from .sweep_plot import write_sweep_plot
from .tables import aggregate, compile_table, display_table, unmatched_paper_rows, with_paper
from .training_curves import write_training_curves


def report_from_rows(frame: pd.DataFrame, recipe_name: str, results_root: Path,
                     baselines: pd.DataFrame | None = None, sets: list[BaselineSet] = (),
                     recipes: dict[str, RecipeSource] | None = None) -> pd.DataFrame:
    """Everything write_report does after gathering: tables, grids and plots of these rows under results/<name>/;
    each stored baseline set's rows on our data sets beside ours (set_pairing.py)."""
    paper = paper_rows(recipe_name, load_baselines() if baselines is None else baselines)
    curves = sampled_ema_rows(frame)  # a sigma_rel sweep's other EMA lengths: in the table and their own figure
    frame = frame[~frame.intermediate]  # tables show each run at its last step; the curves at every evaluated one
    datasets = our_datasets(frame)
    long = with_paper(with_set_rows(aggregate(frame), sets, datasets), paper)
    table = with_set_values(compile_table(long), long, datasets, sets)
    out = Path(results_root) / recipe_name
    table["grid"] = copy_grids(table, out)  # the copy, relative to results/<recipe>/
    compared, comparison = write_comparison(curves, out, recipe_name)
    sampled = sampled_ema_rows(table)
    plots = (write_plots(sampled, paper, out, recipe_name) + write_sweep_plot(sampled, out, recipe_name)
             + write_training_curves(curves, out, recipe_name) + write_guidance_plot(sampled, out, recipe_name)
             + write_sigma_rel_plot(table, out, recipe_name) + compared)
    shown = display_table(table)
    unmatched = unmatched_paper_rows(paper, long)
    store.write_bytes_atomic(out / "table.csv", table.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes_atomic(out / "table.tex", latex_table(shown, caption(recipe_name, paper)).encode())
    store.write_bytes_atomic(out / "table.md",
                             (markdown_page(recipe_name, shown, table.grid, frame, paper, unmatched, plots)
                              + comparison).encode())
    write_recipe_page(table, frame, recipe_name, out, plots, recipes, sets)  # index.html, page.csv: the leaderboard
    return table


def write_report(manifest: RunIndex, runs_root: Path, results_root: Path, compare: list[str] = (),
                 baselines_dir: Path = BASELINES):
    """Write results/<recipe>/table.{md,csv,tex}, sample grids and plots; return the compiled table (one row per
    setting), or None when no evaluation of the run (or of a --compare run) has finished. `compare`: runs and
    baseline sets of baselines_dir (baseline_sets.resolve_compare)."""
    compared = resolve_compare(compare, runs_root, manifest.smoke, baselines_dir)
    frame = gather_sources(manifest, runs_root, compared.runs)
    if frame.empty:
        return None
    frame = label_datasets(frame, [manifest, *compared.manifests])
    return report_from_rows(frame, manifest.recipe, results_root, sets=compared.sets,
                            recipes=recipe_sources(manifest, compared.manifests))

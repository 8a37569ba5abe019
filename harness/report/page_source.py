"""Leaderboard pages rebuilt from what results/<recipe>/ already holds, for results whose runs (and so metrics rows)
are gone: the compiled table (table.csv, in any of the formats the report has written), the protocol line of
table.md (code version, evaluation dates), the PNG plots and the sample grids. The page is the one `scm-bench
report` writes (page.write_page), with the provenance these files keep. `python scripts/rebuild_pages.py`."""
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .baseline_sets import BaselineSet
from .page import NOT_PLOTS, PageFigures, grid_captions, stored_sets, write_index, write_page
from .page_rows import RecipeSource, page_rows
from .paper import PAPER_METHODS
from .rows import OURS, SETTING

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TEXT_COLUMNS = ("source", "setting", "stage", "method", "method_label", "size", "sampler", "sigma_rel", "grid")
REQUIRED = ("method", "nfe", "fid")
PROTOCOL = re.compile(r"code (?P<code>[^;]+); (?:evaluated (?P<first>\S+) to (?P<last>[^.\s]+))?")
REBUILT = ("Rebuilt from the committed table.csv and table.md (the runs that made them are gone): provenance as far "
           "as those files record it.")


class PageSourceError(ValueError):
    """A results folder whose table cannot make a page; the message is one line with the fix."""


def read_table(path: Path) -> pd.DataFrame:
    """A committed table.csv as compile_table's frame: columns older formats lack take their defaults (one source,
    ours; the stage named like its method; unguided; one run per setting)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in REQUIRED if column not in table]
    if missing:
        raise PageSourceError(f"{path}: not a report table (no column {', '.join(missing)}); rewrite it with "
                              "scm-bench report")
    for column in table.columns.difference(TEXT_COLUMNS):
        table[column] = pd.to_numeric(table[column].replace("", np.nan), errors="coerce")
    labels = table.method.map(PAPER_METHODS).fillna(table.method)  # the oldest tables have no labels: sct -> sCT
    defaults = {"source": OURS, "setting": "", "stage": table.method, "method_label": labels, "size": "",
                "sampler": "", "guidance": 1.0, "sigma_rel": "", "grid": "", "params_m": np.nan, "fid_std": np.nan,
                "n": table.fid.notna().astype(int), "n_diverged": 0, "paper_fid": np.nan, "paper_ratio": np.nan,
                "fid_ratio": np.nan, "train_minutes": np.nan}
    for column, default in defaults.items():
        if column not in table:
            table[column] = default
    return table.astype({"nfe": int, "n": int, "n_diverged": int, "guidance": float})


def recorded_provenance(table: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Per row of the table, what table.md and the recipe file say of where it came from."""
    recipe = folder.name
    found = PROTOCOL.search((folder / "table.md").read_text(errors="replace")) if (
        folder / "table.md").is_file() else None
    first, last = (found.group("first"), found.group("last")) if found and found.group("first") else ("", "")
    dates = first if first == last else f"{first} to {last}"
    recipe_file = RECIPES / f"{recipe.removesuffix('-smoke')}.yaml"
    return table[SETTING].assign(
        recipe=recipe, recipe_file=f"recipes/{recipe_file.name}" if recipe_file.is_file() else "",
        code_version=found.group("code").strip() if found else "", date=dates)


def _folder_grids(folder: Path) -> list[tuple[str, str]]:
    """Tables of the oldest format name no grid: every grid in samples/, captioned by its file name."""
    return [(f"samples/{path.name}", path.stem) for path in sorted((folder / "samples").glob("*.png"))]


def rebuild_page(folder: Path, sets: list[BaselineSet]) -> Path:
    """folder/index.html and page.csv from folder/table.csv (and what lies beside it)."""
    folder = Path(folder)
    table = read_table(folder / "table.csv")
    recipe = RecipeSource(folder.name, RECIPES / f"{folder.name.removesuffix('-smoke')}.yaml")
    rows = page_rows(table, recipe, sets, recorded_provenance(table, folder))
    plots = [path.name for path in sorted(folder.glob("*.png")) if path.name not in NOT_PLOTS]
    grids = grid_captions(rows, folder) if table.grid.ne("").any() else _folder_grids(folder)
    return write_page(rows, folder.name, folder, PageFigures(plots, grids), REBUILT)


def rebuild_pages(results_root: Path) -> list[Path]:
    """A page for every results_root/<recipe>/table.csv, and results_root/index.html."""
    sets = stored_sets()
    pages = [rebuild_page(path.parent, sets) for path in sorted(Path(results_root).glob("*/table.csv"))]
    write_index(results_root)
    return pages

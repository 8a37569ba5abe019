"""The report's table in a terminal: every cell whole at 80 columns (no "metho d", "135.3 02"), all rows shown,
and a title that names the methods."""
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from harness.report.figures import (EXTRA_STYLES, METHOD_STYLES, SOURCE_COLOURS, curve_label, line_style,
                                    source_colour)
from harness.report.tables import display_table
from harness.report.terminal import print_report_table, title_of

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "methods_digits" / "table.csv"
NUMERIC = ["fid", "fid_std", "n", "n_diverged", "paper_fid", "fid_diff", "paper_ratio", "fid_ratio", "params_m",
           "train_minutes", "nfe", "guidance"]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """A compiled table as the report makes it (the committed methods_digits one: 8 methods, 13 settings)."""
    frame = pd.read_csv(COMMITTED, keep_default_na=False)
    return frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in NUMERIC if c in frame})


@pytest.mark.parametrize("width", [80, 100, 160])
def test_every_cell_is_whole_at_the_terminals_width(table, width):
    console = Console(width=width, record=True, color_system=None)
    print_report_table(console, table, title_of("methods_digits", table))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= width
    shown = display_table(table)
    for column in ("method", "FID", "FID / teacher", "precision", "recall"):
        for cell in shown[column]:
            assert cell in text, (width, column, cell)  # each cell whole, on one line
    assert text.count("17.868 ± 0.489 (n=3)") == 1


def test_the_title_names_the_methods(table):
    title = title_of("methods_digits", table)
    assert title.startswith("methods_digits: ")
    assert all(label in title for label in ("TrigFlow diffusion", "sCT", "sCD", "MeanFlow", "VSD", "discrete-time CT"))


def test_a_compare_source_has_its_own_colour_and_a_legend_entry():
    """Ours in the method's colour, filled; a --compare run set in a colour of its own (none of the methods'),
    the same in every figure, and its legend entry names it."""
    ours = line_style(METHOD_STYLES["sct"], "-", "ours")
    theirs = line_style(METHOD_STYLES["sct"], "-", "fastcm")
    assert ours["color"] == METHOD_STYLES["sct"][1] and ours["fillstyle"] == "full"
    assert theirs["color"] == source_colour("fastcm") in SOURCE_COLOURS and theirs["color"] != ours["color"]
    method_colours = {c for _, c in METHOD_STYLES.values()} | {c for _, c in EXTRA_STYLES}
    assert not set(SOURCE_COLOURS) & method_colours
    assert curve_label("fastcm", "", "sCT", 1) == "fastcm sCT 1-step"
    assert curve_label("ours", "", "sCT", 1) == "sCT 1-step"

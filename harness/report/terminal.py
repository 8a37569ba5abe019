"""The report's table as a terminal shows it: every cell whole at 80 columns. The columns that identify a row and
FID come first; the other metrics in a second table keyed the same way; where even that is wider than the terminal,
one block of lines per row. The title names the methods the table holds (table.md keeps every column)."""
import pandas as pd
from rich import box
from rich.measure import Measurement
from rich.table import Table

from .tables import display_table

KEYS = ["source", "setting", "stage", "method", "size", "NFE", "guidance"]
MAIN = ["FID", "paper FID", "ours - paper", "FID / teacher"]
LEFT = {"source", "setting", "stage", "method"}
NOT_SHOWN = ["params (M)", "sampler", "train min", "ours / paper", "grid"]


def title_of(recipe: str, table: pd.DataFrame) -> str:
    methods = list(dict.fromkeys(table.method_label.dropna().astype(str)))
    return f"{recipe}: {', '.join(methods)}"


def _natural_width(console, view: Table) -> int:
    """The characters `view` needs with no cell folded."""
    return Measurement.get(console, console.options.update_width(10_000), view).maximum


def _table(frame: pd.DataFrame, title: str | None = None) -> Table:
    view = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in frame.columns:
        view.add_column(column, justify="left" if column in LEFT else "right", no_wrap=True)
    for row in frame.itertuples(index=False):
        view.add_row(*map(str, row))
    return view


def _wrapped(pairs: list[str], width: int, indent: str = "    ") -> list[str]:
    """`name value` pairs joined by three spaces into lines of at most `width`, never splitting a pair."""
    lines, line = [], ""
    for pair in pairs:
        if line and len(indent) + len(line) + 3 + len(pair) > width:
            lines.append(indent + line)
            line = ""
        line = f"{line}   {pair}" if line else pair
    return lines + ([indent + line] if line else [])


def _blocks(console, frame: pd.DataFrame, keys: list[str], title: str) -> None:
    """One block per row: what identifies it on the first line, then its `name value` pairs."""
    console.print(title, markup=False, highlight=False)
    for row in frame.to_dict("records"):
        name = " · ".join(f"{k} {row[k]}" if k in ("NFE", "guidance") else str(row[k]) for k in keys if row[k] != "")
        pairs = [f"{k} {v}" for k, v in row.items() if k not in keys and v != ""]
        for line in ["  " + name, *_wrapped(pairs, console.width)]:
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_report_table(console, table: pd.DataFrame, title: str) -> None:
    """The compiled table at the console's width: identity + FID, then the other metrics; blocks if too wide."""
    shown = display_table(table).drop(columns=NOT_SHOWN, errors="ignore")
    keys = [c for c in KEYS if c in shown]
    main = shown[keys + [c for c in MAIN if c in shown]]
    others = [c for c in shown if c not in keys and c not in MAIN]
    rest = shown[keys + others]
    rest = rest[rest[others].ne("").any(axis=1)] if others else rest.iloc[:0]
    views = [_table(main, title)] + ([_table(rest, "other metrics")] if len(rest) else [])
    if max(_natural_width(console, view) for view in views) > console.width:
        _blocks(console, shown, keys, title)
        return
    for view in views:
        console.print(view)

"""A baseline set as text for a terminal of 80-100 columns (`scm-bench baselines list` and `show`): one table per
(table, data set), a row per method, size, NFE and guidance scale, a column per metric; each group's most common
source in its heading, the other sources as numbered notes; a saved set's provenance under its heading."""
from dataclasses import dataclass

import pandas as pd

from .baseline_sets import BaselineSet, column_or

ROW_KEYS = ["setting", "stage", "method", "size", "params (M)", "NFE", "guidance"]
PROVENANCE = [("recipe", "recipe"), ("recipe_hash", "recipe hash"), ("code_version", "code"), ("seeds", "seeds"),
              ("date", "evaluated"), ("saved", "saved"), ("machine", "machine"), ("threads", "threads"),
              ("torch", "torch")]


@dataclass(frozen=True)
class SetSummary:
    """One line of `baselines list`."""
    name: str
    rows: int
    datasets: str
    metrics: str
    source: str


@dataclass(frozen=True, eq=False)
class GroupView:
    """One (table, data set) of a set: its heading, provenance lines, text cells and numbered notes."""
    title: str
    details: list[str]
    cells: pd.DataFrame
    notes: list[str]


def summary(baseline: BaselineSet) -> SetSummary:
    return SetSummary(baseline.name, len(baseline.rows), ", ".join(baseline.datasets), ", ".join(baseline.metrics),
                      baseline.source)


def value_cell(value, std=float("nan"), n=float("nan"), n_diverged=0, counted: bool = True) -> str:
    """A published number as printed (2.2); a saved mean to 4 significant digits with its spread over seeds
    (10.95 ± 0.58 (n=3); the count left out where not `counted`: the heading has it), "diverged" where every seed
    diverged."""
    if pd.isna(n):
        return "" if pd.isna(value) else f"{value:g}"
    if n == 0:
        return "diverged" if n_diverged else ""
    spread = f" ± {std:.2g}" if n > 1 and not pd.isna(std) else ""
    counts = [f"n={int(n)}"] * ((n > 1 and counted) or n_diverged > 0) + [f"{int(n_diverged)} diverged"] * (
        n_diverged > 0)
    return f"{value:.4g}{spread}" + (f" ({', '.join(counts)})" if counts else "")


def _shared_count(rows: pd.DataFrame) -> int | None:
    """The number of seeds behind every row of a saved group (none diverged), else None."""
    if "n" not in rows or rows.n.isna().any() or rows.n.nunique() != 1 or column_or(rows, "n_diverged", 0).any():
        return None
    return int(rows.n.iloc[0])


def _details(rows: pd.DataFrame) -> list[str]:
    """A saved set's provenance, one 'label: values' per field the rows record."""
    shared = _shared_count(rows)
    parts = [f"every row: mean ± std over {shared} seeds"] if shared and shared > 1 else []
    for column, label in PROVENANCE:
        if column in rows:
            values = sorted({str(v) for v in rows[column].dropna() if str(v)})
            if values:
                parts.append(f"{label}: {', '.join(values)}")
    return ["; ".join(parts)] if parts else []


def _cells(rows: pd.DataFrame, notes: dict[str, int], main: str) -> pd.DataFrame:
    """A row per key, a column per metric, and the notes of rows whose source is not the heading's."""
    column = lambda name, default="": column_or(rows, name, default)  # noqa: E731
    keyed = pd.DataFrame({
        "setting": column("setting"), "stage": column("stage"), "method": rows.method, "size": rows["size"],
        "params (M)": rows.params_m.map(lambda v: "" if pd.isna(v) else f"{v:g}"),
        "NFE": rows.nfe.map(lambda v: "" if pd.isna(v) else f"{v:g}"),
        "guidance": rows.guidance.map(lambda v: "" if pd.isna(v) else f"{v:g}"), "metric": rows.metric,
        "cell": [value_cell(*values, counted=_shared_count(rows) is None)
                 for values in zip(rows.value, column("std", float("nan")), column("n", float("nan")),
                                   column("n_diverged", 0))],
        "note": rows.source.map(lambda s: "" if s == main else f"[{notes[s]}]")})
    keys = [key for key in ROW_KEYS if keyed[key].ne("").any()]
    if "stage" in keys and keyed.stage.eq(keyed.method).all():
        keys.remove("stage")
    wide = keyed.pivot_table(index=keys, columns="metric", values="cell", aggfunc="first", sort=False)
    marks = keyed.groupby(keys, sort=False).note.agg(lambda v: " ".join(sorted(set(v) - {""})))
    wide = wide.fillna("").join(marks.rename("note")).reset_index()
    return wide.drop(columns="note") if wide.note.eq("").all() else wide


def group_views(baseline: BaselineSet) -> list[GroupView]:
    """The set's rows per (table, data set), in the file's order."""
    views = []
    for (table, dataset), rows in baseline.rows.groupby(["table", "dataset"], sort=False):
        sources = rows.source.fillna("").astype(str)
        main = sources.value_counts().index[0]
        others = list(dict.fromkeys(s for s in sources if s != main))
        notes = {source: i + 1 for i, source in enumerate(others)}
        cells = _cells(rows.assign(source=sources), notes, main)
        views.append(GroupView(f"{table} ({dataset}): {main}", _details(rows), cells,
                               [f"[{i}] {source}" for source, i in notes.items()]))
    return views

"""The leaderboard pages: results/<recipe>/index.html (per data set and metric, a table of the page's rows,
page.csv, sortable by any column and filtered by method family and NFE; the recipe's plots and sample grids beside
it; each row's provenance on hover or click) and results/index.html (a line per recipe page). Self-contained: the
style and the script (page_assets/) are written once beside the pages (results/page.css, page.js) and linked, as
are images, by relative path, so a page opens from file:// with no server and no network."""
import html
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from .. import store
from .baseline_sets import BaselineSet, list_sets
from .noise import RULE
from .page_rows import NUMERIC_COLUMNS, RecipeSource, page_rows, provenance
from .paper import BASELINES
from .rows import OURS

ASSETS = Path(__file__).with_name("page_assets")
METRIC_NAMES = {"fid": "FID", "fd_dinov2": "FD_DINOv2", "kid": "KID", "precision": "precision", "recall": "recall",
                "class_accuracy": "class accuracy"}
LOWER_IS_BETTER = ("fid", "fd_dinov2", "kid")
NOT_PLOTS = ("page.png",)  # a screenshot of the page itself, not one of the report's figures
FLOAT_FORMAT = "%.6g"  # page.csv's numbers, and the cells' sort values: the same text


@dataclass(frozen=True)
class Column:
    key: str  # the page.csv column, and the cells' data-col
    label: str
    numeric: bool = False


# the metric and what it is compared with first, so they stay in view on a narrow screen
COLUMNS = [Column("set", "set"), Column("method_label", "method"), Column("family", "family"),
           Column("nfe", "NFE", True), Column("guidance", "guidance", True), Column("value", "", True),
           Column("paper", "paper", True), Column("vs_paper", "vs paper (95%)"),
           Column("paper_ratio", "ours / paper", True),
           Column("fid_ratio", "FID / teacher", True), Column("stage", "stage"), Column("setting", "setting"),
           Column("size", "size"), Column("params_m", "params (M)", True), Column("sampler", "sampler"),
           Column("sigma_rel", "EMA σ_rel", True), Column("train_minutes", "train min", True)]
NUMERIC_CLASS = ' class="num"'
ALWAYS_SHOWN = ("set", "method_label", "nfe", "value")
DIGITS = {"params_m": 1, "paper_ratio": 2, "train_minutes": 1}


@dataclass(frozen=True)
class PageFigures:
    """What the page shows beside its tables, by path relative to the page: plots, and sample grids with a
    caption each."""
    plots: list[str] = field(default_factory=list)
    grids: list[tuple[str, str]] = field(default_factory=list)


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def sort_value(value) -> str:
    """A cell's sort value: its number as page.csv writes it, or its text; "" where it has none."""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else FLOAT_FORMAT % value
    return str(value)


def _number(value: float, digits: int = 3) -> str:
    if pd.isna(value):
        return ""
    return f"{value:.3g}" if value != 0 and abs(value) < 10 ** -digits else f"{value:.{digits}f}"


def _metric_text(row) -> str:
    """mean, ± std over seeds, and the counts where they say something; "diverged" where every run did."""
    if pd.isna(row.value):
        return "diverged" if row.n_diverged else ""
    counts = [f"n={row.n}"] * (row.n > 1 or row.n_diverged > 0) + [f"{row.n_diverged} diverged"] * (row.n_diverged > 0)
    extra = (f" ± {row.std:.3f}" if row.n > 1 and pd.notna(row.std) else "") + (f" ({', '.join(counts)})" if counts
                                                                                    else "")
    if pd.notna(row.ci_low) and pd.notna(row.ci_high):  # the 95% interval it can measure (noise.py)
        extra += f" 95% [{row.ci_low:.3f}, {row.ci_high:.3f}]"
    return _number(row.value) + (f'<span class="extra">{html.escape(extra)}</span>' if extra else "")


def provenance_lines(row) -> list[tuple[str, str]]:
    """Where a row came from, as (what, text) pairs: the published source of a baseline; the recipe, code,
    machines, seeds and wall time of ours (what the rows recorded; older results lack some)."""
    if row.reference and not row.recipe:  # published numbers
        return [("source", row.reference), ("baseline set", row.set)]
    machines = [(what, ", ".join(part for part in (machine, f"{threads} threads" * bool(threads),
                                                   f"torch {version}" * bool(version)) if part))
                for what, machine, threads, version in (
                    ("trained on", row.train_machine, row.train_threads, row.train_torch),
                    ("evaluated on", row.machine, row.threads, row.torch))]
    lines = [("source", row.reference), ("baseline set", row.set * bool(row.reference)),
             ("recipe", row.recipe + (f" ({row.recipe_file})" if row.recipe_file else "")),
             ("run hash", row.recipe_hash + " (of the evaluations the run planned)" * bool(row.recipe_hash)),
             ("training jobs", row.jobs), ("code version", row.code_version), ("evaluated", row.date),
             *machines, ("seeds", row.seeds)]
    lines += [("wall time", f"{row.train_seconds / 60:.1f} min of training ({row.train_seconds:.0f} s, all "
                            f"seeds)")] if pd.notna(row.train_seconds) else []
    lines += [("GPU-hours", f"{row.gpu_hours:.3f} (one device per job)")] if pd.notna(row.gpu_hours) else []
    lines = [(what, text) for what, text in lines if text]
    if not any(what in ("trained on", "evaluated on") for what, _ in lines):
        lines.append(("machine", "not recorded with these results"))
    return lines


def _set_cell(row) -> str:
    lines = provenance_lines(row)
    items = "".join(f"<dt>{html.escape(what)}</dt><dd>{html.escape(text)}</dd>" for what, text in lines)
    return (f'<details class="prov"><summary>{html.escape(row.set)}</summary>'
            f'<dl class="prov-list">{items}</dl></details>')


def _cell(column: Column, row) -> str:
    value = getattr(row, column.key)
    if column.key == "set":
        shown = _set_cell(row)
    elif column.key == "value":
        shown = _metric_text(row)
    elif column.key == "family":
        shown = f'<span class="chip chip-{html.escape(value)}">{html.escape(value)}</span>'
    elif column.key == "nfe":
        shown = str(value)
    elif column.key == "guidance":
        shown = f"{value:g}"
    elif column.numeric and column.key != "sigma_rel":
        shown = _number(value, DIGITS.get(column.key, 3))
    else:
        shown = html.escape(str(value))
    kinds = " ".join([column.key] * (column.key in ("set", "value")) + ["num"] * column.numeric)
    classes = f' class="{kinds}"' if kinds else ""
    return f'<td data-col="{column.key}" data-value="{html.escape(sort_value(value))}"{classes}>{shown}</td>'


def _shown_columns(rows: pd.DataFrame, metric: str) -> list[Column]:
    label = METRIC_NAMES.get(metric, metric)
    named = {"value": label, "paper": f"paper {label}"}
    columns = [Column(c.key, named.get(c.key, c.label), c.numeric) for c in COLUMNS
               if c.key != "fid_ratio" or metric == "fid"]
    def says_nothing(key: str) -> bool:  # no values (or, guidance, every row unguided)
        values = rows[key]
        return values.eq(1.0).all() if key == "guidance" else values.isna().all() if key in NUMERIC_COLUMNS else (
            values.eq("").all())
    return [c for c in columns if c.key in ALWAYS_SHOWN or not says_nothing(c.key)]


def _row_html(row, columns: list[Column], out: Path, with_grids: bool) -> str:
    title = "\n".join(f"{what}: {text}" for what, text in provenance_lines(row))
    kind = "baseline" if row.reference else "ours" if row.set == OURS else "compare"
    cells = "".join(_cell(column, row) for column in columns)
    if with_grids and row.grid and (out / row.grid).is_file():
        grid = html.escape(row.grid)
        cells += f'<td class="thumb"><a href="{grid}"><img src="{grid}" alt="samples"></a></td>'
    elif with_grids:
        cells += '<td class="thumb"></td>'
    return (f'<tr class="{kind}" data-family="{html.escape(row.family)}" data-nfe="{row.nfe}" '
            f'data-set="{html.escape(row.set)}" title="{html.escape(title)}">{cells}</tr>')


def _board(rows: pd.DataFrame, dataset: str, metric: str, out: Path, with_grids: bool) -> str:
    """One table: the page's rows of this data set and metric (with_grids: a column of sample grids)."""
    columns = _shown_columns(rows, metric)
    head = "".join(f'<th data-col="{c.key}" data-type="{"num" if c.numeric else "text"}" aria-sort="none"'
                   f'{NUMERIC_CLASS * c.numeric}><button type="button">{html.escape(c.label)}</button></th>'
                   for c in columns) + "<th>samples</th>" * with_grids
    body = "\n".join(_row_html(row, columns, out, with_grids) for row in rows.itertuples(index=False))
    label = METRIC_NAMES.get(metric, metric)
    hint = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    return (f'<section class="board" data-dataset="{html.escape(dataset)}" data-metric="{html.escape(metric)}">\n'
            f'<h2>{html.escape(dataset or "this recipe")} · {html.escape(label)} <span class="hint">{hint}</span>'
            f'</h2>\n<p class="count"><span class="shown">{len(rows)}</span> of {len(rows)} rows shown</p>\n'
            f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>'
            f'\n</section>')


def _options(values, label=str) -> str:
    return '<option value="">all</option>' + "".join(
        f'<option value="{html.escape(str(v))}">{html.escape(label(v))}</option>' for v in values)


def _figures_html(figures: PageFigures) -> str:
    parts = []
    if figures.plots:
        parts.append("<h2>Plots</h2>")
        parts += [f'<figure><a href="{html.escape(p)}"><img src="{html.escape(p)}" alt="{html.escape(Path(p).stem)}">'
                  f'</a><figcaption>{html.escape(Path(p).stem)}</figcaption></figure>' for p in figures.plots]
    if figures.grids:
        parts.append('<h2>Sample grids</h2>\n<div class="grids">')
        parts += [f'<figure><a href="{html.escape(p)}"><img src="{html.escape(p)}" alt="{html.escape(caption)}"></a>'
                  f'<figcaption>{html.escape(caption)}</figcaption></figure>' for p, caption in figures.grids]
        parts.append("</div>")
    return "\n".join(parts) or "<p class=\"note\">No plots or sample grids were written for this recipe.</p>"


def _lede(rows: pd.DataFrame) -> str:
    ours = rows[rows.set == OURS]
    methods = ", ".join(dict.fromkeys(ours.method_label)) or "none finished"
    first = rows[rows.metric == rows.metric.iloc[0]] if len(rows) else rows
    kinds = np.where(first.reference != "", "baseline", np.where(first.set == OURS, "ours", "compared"))
    told = ", ".join(f"{n} {kind}" for kind, n in pd.Series(kinds, dtype=str).value_counts(sort=False).items())
    metric = METRIC_NAMES.get(first.metric.iloc[0], first.metric.iloc[0]) if len(first) else "FID"
    datasets = ", ".join(sorted(set(rows.dataset) - {""})) or "not recorded"
    text = f"Data set: {datasets}. Our methods: {methods}. {metric} table: {told or 'no'} rows."
    if (rows.reference != "").any():
        text += (" Baselines are the published numbers (results/baselines/); the papers' FID is Inception FID on 50k "
                 "samples, so compare it with ours only where our features are Inception too (see table.md).")
    return html.escape(text)


def render_page(rows: pd.DataFrame, recipe_name: str, figures: PageFigures, out: Path, note: str = "") -> str:
    """The page's HTML: the rows (page_rows) per data set and metric, the figures beside them."""
    boards, seen = [], set()
    for (dataset, metric), group in rows.groupby(["dataset", "metric"], sort=False):
        grids = dataset not in seen and bool(group.grid.ne("").any())  # thumbnails in a data set's first table only
        boards.append(_board(group, dataset, metric, out, grids))
        seen.add(dataset)
    families = sorted(set(rows.family))
    footer = ("page.csv holds exactly the rows of these tables (ours and each --compare run: one row per setting, "
              "as table.csv; the stored baselines of the data set). 95%: the interval a row's FID can measure; "
              f"vs paper: {RULE}. " + note)
    return Template(_asset("page.html")).substitute(
        title=html.escape(f"{recipe_name} · scm-bench"),
        heading=html.escape(f"{recipe_name}: leaderboard"), lede=_lede(rows),
        family_options=_options(families), nfe_options=_options(sorted(set(rows.nfe))),
        boards="\n".join(boards) or '<p class="note">No rows to show.</p>', figures=_figures_html(figures),
        footer=html.escape(footer.strip()))


def grid_captions(rows: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    """Each sample grid the rows link to (that exists under out), captioned by its setting."""
    grids = rows[(rows.grid != "") & (rows.reference == "")].drop_duplicates("grid")
    captions = []
    for row in grids.itertuples(index=False):
        if (out / row.grid).is_file():
            parts = [row.set, row.method_label + (f" ({row.stage})" if row.stage not in ("", row.method) else ""),
                     f"NFE {row.nfe}", f"guidance {row.guidance:g}" * (row.guidance != 1.0), row.size, row.setting]
            captions.append((row.grid, " · ".join(part for part in parts if part)))
    return captions


def write_page(rows: pd.DataFrame, recipe_name: str, out: Path, figures: PageFigures, note: str = "") -> Path:
    """out/page.csv (the rows) and out/index.html (the page); the caller writes the results folder's index once."""
    out = Path(out)
    store.write_bytes_atomic(out / "page.csv", rows.to_csv(index=False, float_format=FLOAT_FORMAT).encode())
    store.write_bytes_atomic(out / "index.html", render_page(rows, recipe_name, figures, out, note).encode())
    return out / "index.html"


def stored_sets(compared: list[BaselineSet] = (), folder: Path = BASELINES) -> list[BaselineSet]:
    """Every baseline set stored in the folder, and each --compare set (one given by its file may lie elsewhere);
    one per name."""
    named = {baseline.name: baseline for baseline in [*list_sets(folder), *compared]}
    return list(named.values())


def write_recipe_page(table: pd.DataFrame, rows: pd.DataFrame | None, recipe_name: str, out: Path,
                      plots: list[Path], recipes: dict[str, RecipeSource] | None = None,
                      compared: list[BaselineSet] = ()) -> Path:
    """`scm-bench report`'s page: the compiled table with the provenance of the metrics rows that made it (recipes:
    per source label, the recipe its rows came from), every baseline set, the report's PNG plots and grids."""
    recipes = recipes or {}
    recipe = recipes.get(OURS, RecipeSource(recipe_name))
    origin = provenance(rows, recipes) if rows is not None and len(rows) else None
    page = page_rows(table, recipe, stored_sets(compared), origin)
    pngs = [Path(p).name for p in plots if Path(p).suffix == ".png" and Path(p).name not in NOT_PLOTS]
    written = write_page(page, recipe_name, out, PageFigures(pngs, grid_captions(page, Path(out))))
    write_index(Path(out).parent)  # the results folder's index, with this page
    return written


def _index_line(page_csv: Path) -> str:
    rows = pd.read_csv(page_csv, dtype={c: str for c in ("set", "method_label", "dataset")}, keep_default_na=False)
    ours = rows[rows.set == OURS]
    one_step = ours[(ours.metric == "fid") & (ours.nfe == 1) & (ours.value.astype(str) != "")]
    one_step = one_step.assign(value=one_step.value.astype(float)).sort_values("value")
    best = (f"{one_step.value.iloc[0]:.3f} ({html.escape(one_step.method_label.iloc[0])})" if len(one_step) else "—")
    name = page_csv.parent.name
    datasets = ", ".join(sorted(set(rows.dataset) - {""})) or "—"
    methods = ", ".join(dict.fromkeys(ours.method_label)) or "—"
    return (f'<tr><td><a href="{html.escape(name)}/index.html">{html.escape(name)}</a></td>'
            f"<td>{html.escape(datasets)}</td><td>{html.escape(methods)}</td><td class=\"num\">{best}</td>"
            f'<td class="num">{len(rows)}</td></tr>')


def write_index(results_root: Path) -> Path:
    """results/index.html: a line per recipe page under the folder (recipe, data set, methods, best FID at 1
    step)."""
    root = Path(results_root)
    pages = sorted(p for p in root.glob("*/page.csv") if (p.parent / "index.html").is_file())
    lines = "\n".join(_index_line(page) for page in pages)
    others = sorted(p.parent.name for p in root.glob("*/index.html") if not (p.parent / "page.csv").is_file())
    more = ("<p>More pages: " + ", ".join(f'<a href="{html.escape(name)}/index.html">{html.escape(name)}/</a>'
                                          for name in others) + "</p>") if others else ""
    text = Template(_asset("index.html")).substitute(rows=lines, more=more)
    for asset in ("page.css", "page.js"):  # one copy beside the pages, which link it (../page.js)
        store.write_bytes_atomic(root / asset, _asset(asset).encode())
    store.write_bytes_atomic(root / "index.html", text.encode())
    return Path(results_root) / "index.html"


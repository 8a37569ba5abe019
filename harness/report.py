"""The report of a recipe: its metrics rows (long format, one per setting and metric) beside the paper's numbers.

results/<recipe>/ gets table.md, table.csv, table.tex, the sample grids (samples/) and Fig. 6-like plots
(harness/plots.py). Seeds of one setting are averaged (mean, std, n); diverged runs are marked, never averaged.
"""
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from . import store
from .recipe import Recipe

BASELINES = Path(__file__).resolve().parents[1] / "results" / "baselines" / "sCM_paper.csv"

# our recipe -> the paper's (table, dataset) in the baselines csv; smoke runs ("NAME-smoke") map like NAME
PAPER_TABLES = {
    "table1_cifar10": ("table1", "cifar10"),
    "table1_imagenet64": ("table1", "imagenet64"),
    "table2_sct": ("table2", "imagenet512"),
    "table2_scd": ("table2", "imagenet512"),
    "fig6_scaling_64": ("fig6", "imagenet64"),
    # Fig. 6's ImageNet 512 points are Table 2's numbers; the csv stores them once, as table2 rows
    "fig6_scaling_512": ("table2", "imagenet512"),
}
# our method names -> the csv's spelling (the csv's other methods are the paper's baselines)
PAPER_METHODS = {"teacher": "TrigFlow teacher", "sct": "sCT", "scd": "sCD"}
METHOD_ORDER = {"teacher": 0, "sct": 1, "scd": 2}  # user methods come after, by name
SIZES = ("S", "M", "L", "XL", "XXL")
OURS = "ours"  # the source label of this recipe's rows; a --compare recipe's rows carry its name
SETTING = ["source", "setting", "method", "size", "sampler", "nfe", "guidance"]
# compile_table's columns before the other metrics' (those follow, named by metric)
TABLE_COLUMNS = [*SETTING, "params_m", "train_minutes", "grid", "fid", "fid_std", "n", "n_diverged", "paper_fid",
                 "fid_diff", "paper_ratio", "fid_ratio"]
WIDE_METRICS = ("fid", "kid", "class_accuracy", "fd_dinov2")  # columns of rows written before the long format
ROW_DEFAULTS = {"variant": "", "size": "", "params_m": np.nan, "seed": 0, "sampler": "", "guidance": 1.0,
                "diverged": False, "grid": "", "train_seconds": np.nan, "num_samples": np.nan, "features": "",
                "reference": "", "reference_hash": "", "ema": "", "code_version": "", "date": "",
                "real_vs_real_half_fid": np.nan, "intermediate": False}


# ---------------------------------------------------------------- rows in

def _melt_wide(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the earlier format (one column per metric) as long rows, so older runs still report."""
    metrics = [m for m in WIDE_METRICS if m in frame]
    keep = [c for c in frame.columns if c not in metrics]
    long = frame.melt(id_vars=keep, value_vars=metrics, var_name="metric", value_name="value")
    return long.dropna(subset=["value"])


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """A frame of metrics rows with every column the report reads (absent fields take their defaults)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if "metric" not in frame:
        frame = _melt_wide(frame)
    for column, default in ROW_DEFAULTS.items():
        frame[column] = frame[column].fillna(default) if column in frame else default
    frame["teacher_job"] = frame.get("teacher_job", frame.job).fillna(frame.job)  # a teacher is its own teacher
    return frame.astype({"diverged": bool, "intermediate": bool, "size": str, "variant": str, "grid": str,
                         "guidance": float, "value": float, "nfe": int})


def load_rows(paths) -> pd.DataFrame:
    """Every row of these metrics.json files, whatever settings made them."""
    rows = []
    for path in paths:
        rows += (store.read_json(path) or {}).get("rows", [])
    return rows_frame(rows)


def gather(recipe: Recipe, runs_root: Path) -> pd.DataFrame:
    """The current rows of the recipe's jobs (every sweep variant); empty when nothing has finished.

    A job's rows are current when its metrics.json was made under the evaluation settings its variant has now;
    rows of other settings are stale and left out."""
    from .evaluate import evaluation_key
    from .launch import expand_jobs

    rows = []
    for job in expand_jobs(recipe, runs_root):
        metrics = store.read_json(Path(job["run_dir"]) / "metrics.json")
        current = evaluation_key(Recipe.model_validate(job["recipe"]), job["method"])  # variants may differ
        if metrics and metrics.get("key", {}).get("evaluation") == current:
            rows += metrics["rows"]
    return rows_frame(rows)


def compare_recipe(name: str, smoke: bool = False) -> tuple[str, Recipe]:
    """(label, recipe) of a --compare NAME: recipes/NAME.yaml, or a path to a recipe file; smoke-scaled with smoke."""
    from .recipe import load_recipe

    path = Path(name) if name.endswith((".yaml", ".yml")) else Path("recipes") / f"{name}.yaml"
    recipe = load_recipe(path)
    if smoke:
        from .smoke import smoke_recipe

        recipe = smoke_recipe(recipe)
    return path.stem, recipe


def gather_sources(recipe: Recipe, runs_root: Path, compare=()) -> pd.DataFrame:
    """Our rows (source "ours") and each --compare recipe's rows (source NAME) in one frame."""
    smoke = recipe.name.endswith("-smoke")  # a smoke report compares against the other recipe's smoke runs
    sources = [(OURS, recipe), *[compare_recipe(name, smoke) for name in compare]]
    parts = [gather(other, runs_root).assign(source=label) for label, other in sources
             if label == OURS or other.name != recipe.name]
    parts = [part for part in parts if len(part)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ---------------------------------------------------------------- the paper's numbers

def load_baselines(path: Path = BASELINES) -> pd.DataFrame:
    """The paper's published numbers (one row per table, dataset, method, size, NFE and metric)."""
    frame = pd.read_csv(path)
    return frame.assign(size=frame["size"].fillna("").astype(str))


def paper_rows(recipe_name: str, baselines: pd.DataFrame) -> pd.DataFrame:
    """The baselines of the paper's table that this recipe reproduces (none for recipes without one, e.g. digits)."""
    where = PAPER_TABLES.get(recipe_name.removesuffix("-smoke"))
    if where is None:
        return baselines.iloc[:0]
    table, dataset = where
    return baselines[(baselines.table == table) & (baselines.dataset == dataset)]


# ---------------------------------------------------------------- tables

def setting_label(frame: pd.DataFrame) -> pd.Series:
    """The variant without the axes shown in their own columns or averaged over: seed, method, and size where the
    size column has it (so variants differing only by seed become one setting)."""
    setting = frame.variant.str.replace(r"(?:^|,)(?:seed|method)=[^,]*", "", regex=True)
    without_size = setting.str.replace(r"(?:^|,)(?:size|network\.size)=[^,]*", "", regex=True)
    return without_size.where(frame["size"] != "", setting).str.strip(",")


def _with_teacher_ratio(frame: pd.DataFrame) -> pd.DataFrame:
    """fid_ratio: each FID row over the FID of its own teacher (teacher_job of the same source), at the teacher's
    largest NFE where it was sampled at several."""
    fid = frame.metric.eq("fid")
    teachers = frame[fid & frame.method.eq("teacher")].dropna(subset=["value"]).sort_values("nfe", ascending=False)
    teacher_fid = teachers.groupby(teachers.source + "/" + teachers.job).value.first()
    ratio = frame.value / (frame.source + "/" + frame.teacher_job.astype(str)).map(teacher_fid)
    return frame.assign(fid_ratio=ratio.where(fid))


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, metric): mean, std (sample) and n over seeds; diverged runs counted, not averaged."""
    frame = frame.assign(value=frame.value.where(~frame.diverged), setting=setting_label(frame),
                         train_minutes=frame.train_seconds / 60, grid=frame.grid.replace("", np.nan))
    frame = _with_teacher_ratio(frame).sort_values(["diverged", "seed"], kind="stable")  # grids of healthy runs first
    grouped = frame.groupby([*SETTING, "metric"], sort=False)
    return grouped.agg(mean=("value", "mean"), std=("value", "std"), n=("value", "count"),
                       n_diverged=("diverged", "sum"), fid_ratio=("fid_ratio", "mean"),
                       params_m=("params_m", "first"), train_minutes=("train_minutes", "mean"),
                       grid=("grid", "first")).reset_index()


def with_paper(settings: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Each aggregated row with the paper's value for the same method, size, NFE and metric (the teacher at any NFE:
    our solver budget may differ), taken only at the paper's guidance scale where the paper states one."""
    def keyed(frame, teacher):
        return frame.assign(_nfe=frame.nfe.where(frame.method != teacher, -1))

    ours = keyed(settings.assign(_method=settings.method.map(PAPER_METHODS).fillna(settings.method),
                                 _row=np.arange(len(settings))), "teacher")
    theirs = keyed(paper.assign(paper_row=paper.index), PAPER_METHODS["teacher"]).rename(columns={
        "method": "_method", "value": "paper", "guidance": "paper_guidance", "params_m": "paper_params_m"})
    merged = ours.merge(theirs[["_method", "size", "_nfe", "metric", "paper", "paper_guidance", "paper_params_m",
                                "paper_row"]],
                        on=["_method", "size", "_nfe", "metric"], how="left")
    other_scale = merged.paper_guidance.notna() & ~np.isclose(merged.guidance, merged.paper_guidance.fillna(0))
    merged.loc[other_scale, ["paper", "paper_params_m", "paper_row"]] = np.nan
    merged = merged.sort_values("paper", na_position="last", kind="stable").drop_duplicates("_row")
    merged = merged.sort_values("_row").drop(columns=["_method", "_nfe", "_row", "paper_guidance"])
    return merged.assign(diff=merged["mean"] - merged.paper, paper_ratio=merged["mean"] / merged.paper)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Like the paper's tables: per setting and size (S..XXL), teacher, sCT, sCD (then other methods), by NFE;
    a --compare source right below ours."""
    sizes = {size: i for i, size in enumerate(("", *SIZES))}
    sources = {source: i for i, source in enumerate(pd.unique(table.source))}
    params = table.groupby("size").params_m.max()  # other sizes (a width sweep) go smallest network first
    keys = table.assign(_size=table["size"].map(sizes).fillna(len(sizes)), _params=table["size"].map(params),
                        _method=table.method.map(METHOD_ORDER).fillna(len(METHOD_ORDER)),
                        _source=table.source.map(sources))
    keys = keys.sort_values(["setting", "_size", "_params", "size", "_method", "method", "nfe", "guidance",
                             "_source"], kind="stable",
                            key=lambda column: column.map(_natural) if column.name == "setting" else column)
    return keys.drop(columns=["_size", "_params", "_method", "_source"]).reset_index(drop=True)


def _natural(setting: str) -> str:
    """Numbers zero-padded, so settings sort 16 < 64 < 256 < 1024 (and None after them)."""
    return re.sub(r"\d+", lambda number: number.group().zfill(12), setting)


def compile_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: FID (mean, std, n, diverged), the paper's FID, ours - paper, ours / paper, FID / teacher,
    the other metrics' means (and the paper's where it has them), params, train minutes, the sample grid."""
    base = long.drop_duplicates(SETTING)[[*SETTING, "params_m", "train_minutes", "grid"]]
    fid = long[long.metric == "fid"].drop(columns="paper_row").rename(columns={
        "mean": "fid", "std": "fid_std", "paper": "paper_fid", "diff": "fid_diff"})
    fid = fid[[*SETTING, "fid", "fid_std", "n", "n_diverged", "paper_fid", "fid_diff", "paper_ratio", "fid_ratio",
               "paper_params_m"]]
    table = base.merge(fid, on=SETTING, how="left")
    others = long[long.metric != "fid"]
    if len(others):
        means = others.pivot(index=SETTING, columns="metric", values="mean")
        papers = others.pivot(index=SETTING, columns="metric", values="paper").dropna(axis=1, how="all")
        table = table.merge(means.join(papers.add_prefix("paper_")), left_on=SETTING, right_index=True, how="left")
    table["params_m"] = table.params_m.fillna(table.pop("paper_params_m"))
    table["n"] = table.n.fillna(0).astype(int)
    table["n_diverged"] = table.n_diverged.fillna(0).astype(int)
    return _ordered(table)


def unmatched_paper_rows(paper: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """The paper's FID rows that no row of ours sits beside: the rest of its table, for context."""
    return paper[(paper.metric == "fid") & ~paper.index.isin(long.paper_row.dropna())]


# ---------------------------------------------------------------- rendering

def _number(value, digits: int = 3, sign: str = "") -> str:
    return "" if pd.isna(value) else f"{value:{sign}.{digits}f}"


def _fid_cell(mean, std, n, n_diverged) -> str:
    """mean ± std (n) over seeds; "diverged" where every run diverged (never a number from a diverged run)."""
    if n == 0:
        return "diverged" if n_diverged else ""
    counts = [f"n={n}"] * (n > 1 or n_diverged > 0) + [f"{n_diverged} diverged"] * (n_diverged > 0)
    return f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else "") + (f" ({', '.join(counts)})" if counts else "")


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text cells for Markdown, LaTeX and the terminal; columns with nothing to say are left out."""
    shown = pd.DataFrame({
        "source": table.source, "setting": table.setting,
        "method": table.method.map(PAPER_METHODS).fillna(table.method), "size": table["size"],
        "params (M)": table.params_m.map(lambda v: _number(v, 1)), "sampler": table.sampler,
        "NFE": table.nfe.astype(str), "guidance": table.guidance.map(lambda v: f"{v:g}"),
        "FID": [_fid_cell(*row) for row in zip(table.fid, table.fid_std, table.n, table.n_diverged)],
        "paper FID": table.paper_fid.map(lambda v: _number(v, 2)),
        "ours - paper": table.fid_diff.map(lambda v: _number(v, 3, "+")),
        "ours / paper": table.paper_ratio.map(lambda v: _number(v, 2)),
        "FID / teacher": table.fid_ratio.map(lambda v: _number(v, 3)),
    })
    for metric in table.columns.difference(TABLE_COLUMNS, sort=False):  # the other metrics (and the paper's)
        shown[metric] = table[metric].map(_number)
    shown["train min"] = table.train_minutes.map(lambda v: _number(v, 1))
    if (table.source == OURS).all():
        shown = shown.drop(columns="source")
    empty = [c for c in shown if c not in ("method", "NFE", "FID") and shown[c].eq("").all()]
    return shown.drop(columns=empty)


def markdown_table(shown: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs the extra `tabulate` package)."""
    def cell(text):
        return str(text).replace("|", "\\|")
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex(text) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in str(text)).replace("±", r"$\pm$")


def latex_table(shown: pd.DataFrame, caption: str) -> str:
    """A booktabs table written here: pandas' to_latex needs jinja2, which scm-bench does not depend on."""
    text_columns = {"source", "setting", "method", "size", "sampler"}
    align = "".join("l" if c in text_columns else "r" for c in shown.columns)
    rows = [" & ".join(_latex(v) for v in row) + r" \\" for row in shown.itertuples(index=False)]
    return "\n".join([
        r"% needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex(caption)}}}",
        rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(_latex(c) for c in shown.columns) + r" \\",
        r"\midrule", *rows, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def _protocol(frame: pd.DataFrame, recipe_name: str, paper: pd.DataFrame) -> str:
    """How the numbers were made, read off our rows, and how to read the comparison columns."""
    ours = frame[frame.source == OURS] if (frame.source == OURS).any() else frame
    ours = ours[~ours.diverged] if (~ours.diverged).any() else ours  # a diverged run made no samples

    def listed(values):
        values = sorted(set(pd.unique(values.astype(str))) - {"", "nan"})
        return ", ".join(values) or "not recorded"

    samples = listed(ours.num_samples.dropna().astype(int))
    dates = ours.date[ours.date != ""].astype(str)
    evaluated = f"evaluated {dates.min()[:10]} to {dates.max()[:10]}" if len(dates) else "evaluation date not recorded"
    floor = ours.real_vs_real_half_fid.dropna()
    text = [f"Protocol: features {listed(ours.features)}; {samples} generated samples against the reference "
            f"{listed(ours.reference)} (hash {listed(ours.reference_hash)}); EMA {listed(ours.ema)}; "
            f"code {listed(ours.code_version)}; {evaluated}."]
    if len(floor):
        text.append(f"Real-vs-real floor: FID between two random halves of the real data = {floor.iloc[0]:.3f} "
                    "(half-size sets, so biased upwards relative to the full-size comparison).")
    text.append("FID: mean ± sample std over seeds (n runs) where a setting ran with several; runs that diverged are "
                "marked and left out of the mean. FID / teacher: each run's FID over the FID of its own teacher.")
    if len(paper):
        table, dataset = PAPER_TABLES[recipe_name.removesuffix("-smoke")]
        text.append(f"paper FID: the sCM paper ({table}, {dataset}; results/baselines/sCM_paper.csv), at the paper's "
                    "guidance scale where it states one (the teacher's at the paper's own solver budget, whatever our NFE); "
                    "ours - paper and ours / paper compare the two. The paper's "
                    "FID is Inception FID on 50k samples: a comparison means something only when our features are "
                    f"Inception too (here: {listed(ours.features)}).")
    return " ".join(text)


# ---------------------------------------------------------------- files out

def _grid_names(table: pd.DataFrame) -> pd.Series:
    """A file name per setting, e.g. ours-scd-nfe-2-guidance-1.4-S.png (letters, digits, '.', '=', '-' only)."""
    told = np.where(table.guidance != 1.0, "-guidance-" + table.guidance.map("{:g}".format), "")
    name = (table.source + "-" + table.method + "-nfe-" + table.nfe.astype(str) + told
            + ("-" + table["size"]).where(table["size"] != "", "")
            + ("-" + table.setting).where(table.setting != "", ""))
    return name.str.replace(r"[^A-Za-z0-9_.=-]+", "-", regex=True) + ".png"


def copy_grids(table: pd.DataFrame, out: Path) -> pd.Series:
    """Copy each setting's grid (its first healthy seed's) into out/samples/; per row the copy's path relative to
    out ("" where the run left no grid)."""
    names = _grid_names(table)
    copied = pd.Series("", index=table.index)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for index, grid, name in zip(table.index, table.grid, names):
        if isinstance(grid, str) and Path(grid).is_file():
            shutil.copyfile(grid, out / "samples" / name)
            copied[index] = f"samples/{name}"
    return copied


def _markdown(recipe_name: str, shown, grids, frame, paper, unmatched, plots) -> str:
    title = f"# {recipe_name}: TrigFlow teacher, sCT and sCD"
    links = ("[samples](" + grids + ")").where(grids != "", "")
    parts = [title, "", markdown_table(shown.assign(grid=links.values) if grids.ne("").any() else shown), "",
             _protocol(frame, recipe_name, paper), ""]
    parts += [line for path in plots if path.suffix == ".png" for line in (f"![{path.stem}]({path.name})", "")]
    if len(unmatched):
        rest = pd.DataFrame({"method": unmatched.method, "family": unmatched.family, "size": unmatched["size"],
                             "params (M)": unmatched.params_m.map(lambda v: _number(v, 1)),
                             "NFE": unmatched.nfe.astype(str), "guidance": unmatched.guidance.map(lambda v: "" if pd.isna(v) else f"{v:g}"),
                             "FID": unmatched.value.map(lambda v: _number(v, 2))})
        rest = rest.drop(columns=[c for c in rest if rest[c].eq("").all()])
        parts += ["", "## The paper's other rows of this table (for context)", "", markdown_table(rest)]
    return "\n".join(parts) + "\n"


def _caption(recipe_name: str, paper: pd.DataFrame) -> str:
    where = PAPER_TABLES.get(recipe_name.removesuffix("-smoke"))
    beside = f" beside the sCM paper ({where[0]}, {where[1]})" if len(paper) else ""
    return f"{recipe_name}: FID (mean ± std over seeds){beside}; FID / teacher: over each run's own teacher."


def report_from_rows(frame: pd.DataFrame, recipe_name: str, results_root: Path,
                     baselines: pd.DataFrame | None = None) -> pd.DataFrame:
    """Everything write_report does after gathering: tables, grids and plots of these rows under results/<name>/."""
    from .plots import write_plots
    from .sweep_plot import write_sweep_plot
    from .training_curves import write_training_curves

    paper = paper_rows(recipe_name, load_baselines() if baselines is None else baselines)
    curves = frame
    frame = frame[~frame.intermediate]  # tables show each run at its last step; the curves at every evaluated one
    long = with_paper(aggregate(frame), paper)
    table = compile_table(long)
    out = Path(results_root) / recipe_name
    table["grid"] = copy_grids(table, out)  # the copy, relative to results/<recipe>/
    plots = (write_plots(table, paper, out, recipe_name) + write_sweep_plot(table, out, recipe_name)
             + write_training_curves(curves, out, recipe_name))
    shown = display_table(table)
    unmatched = unmatched_paper_rows(paper, long)
    store.write_bytes_atomic(out / "table.csv", table.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes_atomic(out / "table.tex", latex_table(shown, _caption(recipe_name, paper)).encode())
    store.write_bytes_atomic(out / "table.md",
                             _markdown(recipe_name, shown, table.grid, frame, paper, unmatched, plots).encode())
    return table


def write_report(recipe: Recipe, runs_root: Path, results_root: Path, compare: list[str] = ()):
    """Write results/<recipe>/table.{md,csv,tex}, sample grids and plots; return the compiled table (one row per
    setting), or None when no job of the recipe (or of a --compare recipe) has finished."""
    frame = gather_sources(recipe, runs_root, compare)
    if frame.empty:
        return None
    return report_from_rows(frame, recipe.name, results_root)

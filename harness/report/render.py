"""The report's files: a Markdown and a LaTeX table (written here: pandas' writers need tabulate or jinja2, which
scm-bench does not depend on), the protocol line read off the rows, and the sample grids copied beside them."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .noise import RULE
from .paper import PAPER_TABLES
from .rows import OURS
from .tables import number

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
    text.append(f"FID 95%: the interval each setting can measure; {RULE}.")
    if len(paper):
        table, dataset = PAPER_TABLES[recipe_name.removesuffix("-smoke")]
        text.append(f"paper FID: the published number ({table}, {dataset}; results/baselines/), at the paper's "
                    "guidance scale where it states one (the teacher's at the paper's own solver budget, whatever "
                    "our NFE); "
                    "ours - paper and ours / paper compare the two. The paper's "
                    "FID is Inception FID on 50k samples: a comparison means something only when our features are "
                    f"Inception too (here: {listed(ours.features)}).")
    return " ".join(text)


def _grid_names(table: pd.DataFrame) -> pd.Series:
    """A file name per setting, e.g. ours-scd-nfe-2-guidance-1.4-S.png (letters, digits, '.', '=', '-' only)."""
    told = np.where(table.guidance != 1.0, "-guidance-" + table.guidance.map("{:g}".format), "")
    name = (table.source + "-" + table.stage + "-nfe-" + table.nfe.astype(str) + told
            + ("-" + table["size"]).where(table["size"] != "", "")
            + ("-" + table.setting).where(table.setting != "", ""))
    if "sigma_rel" in table:  # a sigma_rel sweep: one grid per EMA length
        name += ("-sigma_rel-" + table.sigma_rel).where(table.sigma_rel != "", "")
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


def markdown_page(recipe_name: str, shown, grids, frame, paper, unmatched, plots) -> str:
    methods = ", ".join(dict.fromkeys(shown["method"])) if "method" in shown else ""
    title = f"# {recipe_name}: {methods}"
    links = ("[samples](" + grids + ")").where(grids != "", "")
    parts = [title, "", markdown_table(shown.assign(grid=links.values) if grids.ne("").any() else shown), "",
             _protocol(frame, recipe_name, paper), ""]
    parts += [line for path in plots if path.suffix == ".png" for line in (f"![{path.stem}]({path.name})", "")]
    if len(unmatched):
        rest = pd.DataFrame({"method": unmatched.method, "family": unmatched.family, "size": unmatched["size"],
                             "params (M)": unmatched.params_m.map(lambda v: number(v, 1)),
                             "NFE": unmatched.nfe.astype(str),
                             "guidance": unmatched.guidance.map(lambda v: "" if pd.isna(v) else f"{v:g}"),
                             "FID": unmatched.value.map(lambda v: number(v, 2))})
        rest = rest.drop(columns=[c for c in rest if rest[c].eq("").all()])
        parts += ["", "## The paper's other rows of this table (for context)", "", markdown_table(rest)]
    return "\n".join(parts) + "\n"


def caption(recipe_name: str, paper: pd.DataFrame) -> str:
    where = PAPER_TABLES.get(recipe_name.removesuffix("-smoke"))
    beside = f" beside the sCM paper ({where[0]}, {where[1]})" if len(paper) else ""
    return (f"{recipe_name}: FID (mean ± std over seeds){beside}; FID / teacher: over the FID of the job each run "
            "was trained from.")

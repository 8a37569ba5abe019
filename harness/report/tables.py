"""The report's table: metrics rows aggregated per setting (mean, std and n over seeds; diverged runs counted, never
averaged), each beside the paper's number where the paper has one, FID over the FID of the job it was trained
from, ordered like the paper's tables; and its text cells for Markdown, LaTeX and the terminal."""
import re

import numpy as np
import pandas as pd

from .noise import fid_intervals, mark, versus_interval, versus_value
from .paper import PAPER_METHODS
from .rows import OURS, SETTING, setting_label

SIZES = ("S", "M", "L", "XL", "XXL")
METHOD_ORDER = {"diffusion": 0, "sct": 1, "scd": 2, "discrete-ct": 3}  # other methods come after, by name
# compile_table's columns before the other metrics' (those follow, named by metric)
TABLE_COLUMNS = [*SETTING, "method_label", "base", "ema_sweep", "params_m", "train_minutes", "grid", "fid", "fid_std",
                 "n", "n_diverged", "paper_fid", "fid_diff", "paper_ratio", "fid_ratio", "fid_ci_low", "fid_ci_high",
                 "fid_ci_kind", "fid_vs_paper", "fid_vs_ours", "fid_diff_ours"]
VERSUS_OURS = ["stage", "size", "nfe", "guidance", "sigma_rel"]  # a --compare row meets ours where these agree


def _with_parent_ratio(frame: pd.DataFrame) -> pd.DataFrame:
    """fid_ratio: each FID row over the FID of the job it was trained from (teacher_job: its teacher, else its
    init; a job trained from scratch is its own), at that job's largest NFE: as the same source evaluated it, else
    as another source did (a run that starts from another recipe's teacher: jobs are shared by content)."""
    fid = frame.metric.eq("fid")
    parents = frame[fid & frame.base & ~frame.ema_sweep].dropna(subset=["value"]).sort_values("nfe", ascending=False)
    own = parents.groupby(parents.source + "/" + parents.job).value.first()
    anyone = parents.sort_values("source", key=lambda s: s != OURS, kind="stable").groupby("job").value.first()
    parent_fid = (frame.source + "/" + frame.teacher_job.astype(str)).map(own)
    parent_fid = parent_fid.fillna(frame.teacher_job.astype(str).map(anyone))
    return frame.assign(fid_ratio=(frame.value / parent_fid).where(fid))


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, metric): mean, std (sample) and n over seeds; diverged runs counted, not averaged; the
    95% interval it can measure (noise.py: over seeds, else a single run's bootstrap interval)."""
    frame = frame.assign(value=frame.value.where(~frame.diverged), setting=setting_label(frame),
                         train_minutes=frame.train_seconds / 60, grid=frame.grid.replace("", np.nan))
    frame = _with_parent_ratio(frame).sort_values(["diverged", "seed"], kind="stable")  # grids of healthy runs first
    grouped = frame.groupby([*SETTING, "metric"], sort=False).agg(
        mean=("value", "mean"), std=("value", "std"), n=("value", "count"), n_diverged=("diverged", "sum"),
        fid_ratio=("fid_ratio", "mean"), method_label=("method_label", "first"), base=("base", "first"),
        ema_sweep=("ema_sweep", "first"), params_m=("params_m", "first"), train_minutes=("train_minutes", "mean"),
        grid=("grid", "first"), ci_low=("fid_ci_low", "first"), ci_high=("fid_ci_high", "first")).reset_index()
    return grouped.join(fid_intervals(grouped["mean"], grouped["std"], grouped.n, grouped.pop("ci_low"),
                                      grouped.pop("ci_high")))


def with_paper(settings: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Each aggregated row with the paper's value for the same method, size, metric, NFE and guidance scale (a paper
    row without a scale is unguided: scale 1); a row with no such paper row shows none, never a neighbour's."""
    ours = settings.assign(_method=settings.method.map(PAPER_METHODS).fillna(settings.method),
                           _row=np.arange(len(settings)))
    theirs = paper.assign(paper_row=paper.index).rename(columns={
        "method": "_method", "value": "paper", "guidance": "paper_guidance", "params_m": "paper_params_m",
        "nfe": "paper_nfe"})
    merged = ours.merge(theirs[["_method", "size", "metric", "paper_nfe", "paper", "paper_guidance",
                                "paper_params_m", "paper_row"]], on=["_method", "size", "metric"], how="left")
    other_nfe = merged.paper.notna() & (merged.paper_nfe != merged.nfe)
    other_scale = ~np.isclose(merged.guidance.astype(float), merged.paper_guidance.fillna(1.0).astype(float))
    merged.loc[other_nfe | other_scale, ["paper", "paper_params_m", "paper_row"]] = np.nan
    merged = merged.sort_values("paper", na_position="last", kind="stable").drop_duplicates("_row")
    merged = merged.sort_values("_row").drop(columns=["_method", "_row", "paper_guidance", "paper_nfe"])
    nan = pd.Series(np.nan, index=merged.index)  # rows aggregated without intervals have none to compare
    verdicts = [versus_value(*row) for row in zip(merged.get("ci_low", nan), merged.get("ci_high", nan), merged.paper)]
    return merged.assign(diff=merged["mean"] - merged.paper, paper_ratio=merged["mean"] / merged.paper,
                         vs_paper=verdicts)


def _natural(setting: str) -> str:
    """Numbers zero-padded, so settings sort 16 < 64 < 256 < 1024 (and None after them)."""
    return re.sub(r"\d+", lambda number: number.group().zfill(12), setting)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Like the paper's tables: per setting and size (S..XXL), the jobs trained from scratch first, then the
    built-ins in their order (then other methods), by NFE; a --compare source right below ours."""
    sizes = {size: i for i, size in enumerate(("", *SIZES))}
    sources = {source: i for i, source in enumerate(pd.unique(table.source))}
    params = table.groupby("size").params_m.max()  # other sizes (a width sweep) go smallest network first
    keys = table.assign(_size=table["size"].map(sizes).fillna(len(sizes)), _params=table["size"].map(params),
                        _base=~table.base.astype(bool),
                        _method=table.method.map(METHOD_ORDER).fillna(len(METHOD_ORDER)),
                        _source=table.source.map(sources))
    keys = keys.sort_values(["setting", "_size", "_params", "size", "_base", "_method", "method", "stage", "nfe",
                             "guidance", "sigma_rel", "_source"], kind="stable",
                            key=lambda column: column.map(_natural) if column.name == "setting" else column)
    return keys.drop(columns=["_size", "_params", "_base", "_method", "_source"]).reset_index(drop=True)


def _versus_ours(fid: pd.DataFrame) -> pd.DataFrame:
    """A --compare source's FID rows against ours where stage, size, NFE, guidance and EMA agree: the difference
    and whether it is beyond the noise (fid_diff_ours, fid_vs_ours)."""
    key = fid[VERSUS_OURS].astype(str).agg("|".join, axis=1)
    ours = fid[fid.source == OURS].assign(_key=key).drop_duplicates("_key").set_index("_key")
    theirs = (fid.source != OURS) & key.isin(ours.index)
    matched = ours.reindex(key)
    diff = (fid.fid - matched.fid.to_numpy()).where(theirs)
    verdict = [versus_interval(*row) if other else "" for row, other in
               zip(zip(fid.fid_ci_low, fid.fid_ci_high, matched.fid_ci_low, matched.fid_ci_high), theirs)]
    return fid.assign(fid_diff_ours=diff, fid_vs_ours=verdict)


def compile_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: FID (mean, std, n, diverged), the paper's FID, ours - paper, ours / paper, FID / parent,
    the other metrics' means (and the paper's where it has them), params, train minutes, the sample grid."""
    base = long.drop_duplicates(SETTING)[[*SETTING, "method_label", "base", "ema_sweep", "params_m", "train_minutes",
                                          "grid"]]
    fid = long[long.metric == "fid"].drop(columns="paper_row").rename(columns={
        "mean": "fid", "std": "fid_std", "paper": "paper_fid", "diff": "fid_diff", "ci_low": "fid_ci_low",
        "ci_high": "fid_ci_high", "ci_kind": "fid_ci_kind", "vs_paper": "fid_vs_paper"})
    fid = _versus_ours(fid[[*SETTING, "fid", "fid_std", "n", "n_diverged", "paper_fid", "fid_diff", "paper_ratio",
                            "fid_ratio", "paper_params_m", "fid_ci_low", "fid_ci_high", "fid_ci_kind",
                            "fid_vs_paper"]])
    table = base.merge(fid, on=SETTING, how="left")
    others = long[long.metric != "fid"]
    if len(others):
        means = others.pivot(index=SETTING, columns="metric", values="mean")
        papers = others.pivot(index=SETTING, columns="metric", values="paper").dropna(axis=1, how="all")
        table = table.merge(means.join(papers.add_prefix("paper_")), left_on=SETTING, right_index=True, how="left")
    table["params_m"] = table.params_m.fillna(table.pop("paper_params_m"))
    table["n"] = table.n.fillna(0).astype(int)
    table["n_diverged"] = table.n_diverged.fillna(0).astype(int)
    table = _ordered(table)
    # no stage swept sigma_rel: the table is the one such runs always had
    return table.drop(columns=["sigma_rel", "ema_sweep"]) if table.sigma_rel.eq("").all() else table


def unmatched_paper_rows(paper: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """The paper's FID rows that no row of ours sits beside: the rest of its table, for context."""
    return paper[(paper.metric == "fid") & ~paper.index.isin(long.paper_row.dropna())]


def number(value, digits: int = 3, sign: str = "") -> str:
    return "" if pd.isna(value) else f"{value:{sign}.{digits}f}"


def _fid_cell(mean, std, n, n_diverged) -> str:
    """mean ± std (n) over seeds; "diverged" where every run diverged (never a number from a diverged run)."""
    if n == 0:
        return "diverged" if n_diverged else ""
    counts = [f"n={n}"] * (n > 1 or n_diverged > 0) + [f"{n_diverged} diverged"] * (n_diverged > 0)
    return f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else "") + (f" ({', '.join(counts)})" if counts else "")


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text cells for Markdown, LaTeX and the terminal; columns with nothing to say are left out (and
    the stage where every stage is named after its method)."""
    nan, blank = pd.Series(np.nan, index=table.index), pd.Series("", index=table.index)
    shown = pd.DataFrame({
        "source": table.source, "setting": table.setting, "stage": table.stage, "method": table.method_label,
        "size": table["size"], "params (M)": table.params_m.map(lambda v: number(v, 1)), "sampler": table.sampler,
        "NFE": table.nfe.astype(str), "guidance": table.guidance.map(lambda v: f"{v:g}"),
        "EMA sigma_rel": table.get("sigma_rel", blank),
        "FID": [_fid_cell(*row) for row in zip(table.fid, table.fid_std, table.n, table.n_diverged)],
        "paper FID": table.paper_fid.map(lambda v: number(v, 2)),
        "FID 95%": [f"[{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else "" for lo, hi in
                    zip(table.get("fid_ci_low", nan), table.get("fid_ci_high", nan))],
        "ours - paper": [mark(number(v, 3, "+"), verdict) for v, verdict in
                         zip(table.fid_diff, table.get("fid_vs_paper", blank))],
        "vs ours": [mark(number(v, 3, "+"), verdict) for v, verdict in
                    zip(table.get("fid_diff_ours", nan), table.get("fid_vs_ours", blank))],
        "ours / paper": table.paper_ratio.map(lambda v: number(v, 2)),
        "FID / teacher": table.fid_ratio.map(lambda v: number(v, 3)),
    })
    for metric in table.columns.difference(TABLE_COLUMNS, sort=False):  # the other metrics (and the paper's)
        if metric.endswith(" noise"):  # the verdict of the difference beside it (set_pairing.py)
            continue
        verdicts = table.get(f"{metric} noise", blank)
        shown[metric] = [mark(number(v, 3, "+" if metric.startswith("ours - ") else ""), verdict)
                         for v, verdict in zip(table[metric], verdicts)]
    shown["train min"] = table.train_minutes.map(lambda v: number(v, 1))
    if (table.source == OURS).all():
        shown = shown.drop(columns="source")
    if (table.stage == table.method).all():
        shown = shown.drop(columns="stage")
    empty = [c for c in shown if c not in ("method", "NFE", "FID") and shown[c].eq("").all()]
    return shown.drop(columns=empty)

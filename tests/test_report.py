"""The report: synthetic long-format metrics rows in a runs folder laid out like real runs, compiled beside the
paper's numbers (results/baselines/sCM_paper.csv); seeds averaged, diverged runs marked, stale rows left out,
--compare rows added, plots, LaTeX and CSV written, and the rich command's exit codes."""
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer import Typer
from typer.testing import CliRunner

from harness import store
from harness.evaluate import evaluation_key, sample_settings
from harness.launch import expand_jobs
from harness.recipe import Recipe, load_recipe
from harness.report import load_baselines, write_report
from harness.report_cli import report_command

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2]
SEED_OFFSET = {0: 0.0, 1: 0.1, 2: 0.2}  # FID offsets per seed: mean +0.1, sample std 0.1
PARAMS = {"S": 280.2, "M": 497.8, "L": 777.6, "XL": 1119.4, "XXL": 1523.4}


def paper_fid(table: str, method: str, size: str, nfe: int) -> float:
    base = load_baselines()
    row = base[(base.table == table) & (base.method == method) & (base["size"] == size) & (base.nfe == nfe)
               & (base.metric == "fid")]
    return float(row.value.iloc[0])


def our_fid(method: str, size: str, nfe: int, guidance: float, seed: int) -> float:
    """Paper-like numbers with a known offset: 0.5 above the paper's Table 2 (at its guidance scale), plus the seed's."""
    name = {"teacher": "TrigFlow teacher", "sct": "sCT", "scd": "sCD"}.get(method)
    base = paper_fid("table2", name, size, 126 if method == "teacher" else nfe) if name and size else 3.0 + nfe
    return base + 0.5 + SEED_OFFSET[seed] + 0.01 * (guidance - 1.0)


def setting_rows(variant: Recipe, job: dict, fid_of, method_name=None) -> list[dict]:
    """One row per (setting, metric) as harness/evaluate.py writes them."""
    rows = []
    for sampler, steps, guidance in sample_settings(variant, job["method"]):
        nfe = steps if sampler == "consistency" else (2 * steps - 1) * (2 if guidance != 1.0 else 1)
        size = variant.network.size or None
        fid = fid_of(job["method"], size, nfe, guidance, variant.seed)
        common = dict(recipe=variant.name, variant=job["variant"], job=Path(job["run_dir"]).name,
                      teacher_job=job.get("teacher", Path(job["run_dir"]).name),
                      method=method_name or job["method"], size=size, params_m=PARAMS.get(size, 0.1),
                      seed=variant.seed, sampler=sampler, nfe=nfe, guidance=guidance,
                      ema="power sigma_rel=0.05", checkpoint_step=2, num_samples=20, reference="synthetic-ref",
                      reference_hash="abc123", features="digits-classifier-64d", code_version="deadbee",
                      date="2025-01-02T03:04:05", grid="", train_seconds=60.0, real_vs_real_half_fid=None,
                      diverged=False)
        rows += [{**common, "metric": "fid", "value": fid}, {**common, "metric": "kid", "value": fid / 1000}]
    return rows


def write_runs(recipe: Recipe, runs: Path, fid_of=our_fid, method_name=None, edit=lambda job, rows, key: key):
    """metrics.json for every job of the recipe; `edit` may change a job's rows and return another evaluation key."""
    for job in expand_jobs(recipe, runs):
        variant = Recipe.model_validate(job["recipe"])
        rows = setting_rows(variant, job, fid_of, method_name if job["method"] != "teacher" else None)
        key = edit(job, rows, evaluation_key(variant, job["method"]))
        store.write_json(Path(job["run_dir"]) / "metrics.json", {"key": {"evaluation": key}, "rows": rows})


def seeded(path: str, seeds=SEEDS) -> Recipe:
    return load_recipe(ROOT / "recipes" / path, [f"sweep.seed={seeds}"])


def diverge_and_stale(job, rows, key):
    """size M seed 2 sCD diverged; every size XXL sCD diverged; the size L seed 0 teacher evaluated elsewhere."""
    size, seed = rows[0]["size"], rows[0]["seed"]
    if job["method"] == "scd" and ((size == "M" and seed == 2) or size == "XXL"):
        for row in rows:
            row.update(diverged=True, value=float("nan"))
    if job["method"] == "teacher" and size == "L" and seed == 0:
        return "stale-settings"
    return key


@pytest.fixture(scope="module")
def table2(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table2")
    recipe = seeded("table2_scd.yaml")
    write_runs(recipe, tmp / "runs", edit=diverge_and_stale)
    table = write_report(recipe, tmp / "runs", tmp / "results")
    return table, tmp / "results" / recipe.name


def _row(table, method, size, nfe, guidance=None, source="ours"):
    rows = table[(table.method == method) & (table["size"] == size) & (table.nfe == nfe) & (table.source == source)]
    return rows if guidance is None else rows[rows.guidance == guidance]


def test_ours_beside_the_paper_with_difference_and_ratio(table2):
    table, _ = table2
    row = _row(table, "scd", "S", 1, 1.5).iloc[0]  # the paper's S sCD 1-step is at guidance 1.5
    paper = paper_fid("table2", "sCD", "S", 1)
    assert row.paper_fid == pytest.approx(paper)
    assert row.fid == pytest.approx(paper + 0.5 + 0.1 + 0.005)  # mean over seeds
    assert row.fid_diff == pytest.approx(0.605) and row.paper_ratio == pytest.approx(row.fid / paper)
    assert math.isnan(_row(table, "scd", "S", 1, 1.4).iloc[0].paper_fid)  # not the paper's scale: nothing beside
    teacher = _row(table, "teacher", "S", 126).iloc[0]
    assert teacher.paper_fid == pytest.approx(paper_fid("table2", "TrigFlow teacher", "S", 126))
    assert teacher.fid_ratio == pytest.approx(1.0)
    per_seed = [our_fid("scd", "S", 1, 1.5, seed) / our_fid("teacher", "S", 126, 1.4, seed) for seed in SEEDS]
    assert row.fid_ratio == pytest.approx(sum(per_seed) / 3)  # each run over its own teacher, then the mean
    assert list(table.drop_duplicates("size")["size"]) == ["S", "M", "L", "XL", "XXL"]  # Table 2's order
    assert _row(table, "teacher", "S", 126).iloc[0].params_m == pytest.approx(280.2)


def test_seeds_give_mean_std_and_n(table2):
    table, out = table2
    row = _row(table, "scd", "S", 2, 1.4).iloc[0]
    assert (row.n, row.n_diverged) == (3, 0) and row.fid_std == pytest.approx(0.1)
    assert "± 0.100 (n=3)" in (out / "table.md").read_text()


def test_diverged_runs_are_marked_and_left_out(table2):
    table, out = table2
    some = _row(table, "scd", "M", 1, 1.3).iloc[0]
    assert (some.n, some.n_diverged) == (2, 1)
    assert some.fid == pytest.approx(paper_fid("table2", "sCD", "M", 1) + 0.5 + 0.05 + 0.003)
    every = _row(table, "scd", "XXL", 1, 1.3).iloc[0]
    assert math.isnan(every.fid) and (every.n, every.n_diverged) == (0, 3)
    markdown = out / "table.md"
    line = next(x for x in markdown.read_text().splitlines() if "| sCD | XXL |" in x and "| 1 | 1.3 |" in x)
    assert "| diverged |" in line and "± 0.071 (n=2, 1 diverged)" in markdown.read_text()


def test_stale_rows_are_left_out(table2):
    table, _ = table2
    assert _row(table, "teacher", "L", 126).iloc[0].n == 2  # seed 0's teacher was evaluated under other settings
    assert _row(table, "teacher", "M", 126).iloc[0].n == 3


def test_files_written(table2):
    _, out = table2
    csv = pd.read_csv(out / "table.csv")
    assert {"fid", "fid_std", "n", "n_diverged", "paper_fid", "fid_diff", "paper_ratio", "fid_ratio",
            "kid"} <= set(csv.columns)
    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and r"\bottomrule" in tex
    for name in ("fid_vs_size.png", "fid_vs_size.pdf", "fid_vs_nfe.png", "fid_vs_nfe.pdf"):
        assert (out / name).stat().st_size > 1000
    assert (out / "fid_vs_size.png").read_bytes()[:4] == b"\x89PNG" and (out / "fid_vs_size.pdf").read_bytes()[:4] == b"%PDF"
    markdown = (out / "table.md").read_text()
    assert "![fid_vs_size](fid_vs_size.png)" in markdown and "Protocol: features digits-classifier-64d" in markdown
    assert "EDM2" in markdown  # the paper's other rows of Table 2, for context


def test_compare_adds_a_users_method_to_tables_and_plots(tmp_path, monkeypatch):
    """--compare fastcm: a user's recipe recipes/fastcm.yaml (an sCD variant whose rows name its method fastcm)."""
    monkeypatch.chdir(tmp_path)  # --compare NAME reads recipes/NAME.yaml from the working directory
    recipe = seeded("fig6_scaling_512.yaml", [0])
    write_runs(recipe, tmp_path / "runs")
    raw = yaml.safe_load((ROOT / "recipes" / "fig6_scaling_512.yaml").read_text())
    raw.update(name="fastcm")
    raw["sweep"]["method"] = ["scd"]
    (tmp_path / "recipes").mkdir()
    # keys in file order, so the size axis keeps its labels S..XXL
    (tmp_path / "recipes" / "fastcm.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    mine = load_recipe(tmp_path / "recipes" / "fastcm.yaml")
    write_runs(mine, tmp_path / "runs", fid_of=lambda m, size, nfe, g, seed: 2.0 + 0.1 * nfe, method_name="fastcm")
    table = write_report(recipe, tmp_path / "runs", tmp_path / "results", compare=["fastcm"])
    users = table[table.source == "fastcm"]
    assert set(users.method) == {"teacher", "fastcm"} and set(users["size"]) == {"S", "M", "L", "XL", "XXL"}
    assert users[users.method == "fastcm"].fid.eq(users[users.method == "fastcm"].nfe * 0.1 + 2.0).all()
    sct = _row(table, "sct", "XL", 2).iloc[0]
    assert sct.paper_fid == pytest.approx(paper_fid("table2", "sCT", "XL", 2))  # Fig. 6 at 512 = Table 2's numbers
    out = tmp_path / "results" / "fig6_scaling_512"
    assert "| fastcm | " in (out / "table.md").read_text()
    assert (out / "fid_vs_size.pdf").stat().st_size > 1000 and (out / "fid_vs_nfe.png").stat().st_size > 1000


def test_digits_rows_like_the_real_ones(tmp_path):
    """The shipped digits recipe, values of results/digits/table.csv: no paper table, class accuracy, grids."""
    recipe = load_recipe(ROOT / "recipes" / "digits.yaml")
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"\x89PNG fake")
    real = {("teacher", 35): (5.0221, 0.9689), ("sct", 1): (10.2552, 0.9489), ("sct", 2): (7.8830, 0.9456),
            ("scd", 1): (9.0636, 0.9478), ("scd", 2): (6.6953, 0.9600)}

    def shaped(job, rows, key):
        for row in rows:
            fid, accuracy = real[row["method"], row["nfe"]]
            row.update(size=None, params_m=0.17, grid=str(grid), real_vs_real_half_fid=10.282, num_samples=1800,
                       value=fid if row["metric"] == "fid" else accuracy,
                       metric="fid" if row["metric"] == "fid" else "class_accuracy")
        return key

    write_runs(recipe, tmp_path / "runs", edit=shaped)
    table = write_report(recipe, tmp_path / "runs", tmp_path / "results")
    assert list(table.method) == ["teacher", "sct", "sct", "scd", "scd"] and list(table.nfe) == [35, 1, 2, 1, 2]
    assert table.fid_ratio.iloc[0] == 1.0 and table.fid_ratio.iloc[1] == pytest.approx(10.2552 / 5.0221)
    assert table.class_accuracy.iloc[4] == pytest.approx(0.96)
    out = tmp_path / "results" / "digits"
    markdown = (out / "table.md").read_text()
    assert markdown.count("[samples](samples/") == 5 and "paper FID" not in markdown and "10.282" in markdown
    assert (out / "samples" / "ours-scd-nfe-2.png").is_file()
    assert (out / "fid_vs_nfe.png").is_file() and not (out / "fid_vs_size.png").exists()  # one size: no scaling plot


def test_nothing_finished_gives_none(tmp_path):
    assert write_report(load_recipe(ROOT / "recipes" / "digits.yaml"), tmp_path / "runs", tmp_path / "results") is None


def _cli(*args):
    app = Typer()
    app.command()(report_command)
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_prints_the_table_and_fails_cleanly_on_a_bad_recipe(tmp_path):
    recipe = load_recipe(ROOT / "recipes" / "digits.yaml")
    write_runs(recipe, tmp_path / "runs")
    done = _cli(ROOT / "recipes" / "digits.yaml", "--runs-dir", tmp_path / "runs", "--results-dir", tmp_path / "out")
    assert done.exit_code == 0, done.output
    assert "sCD" in done.output and (tmp_path / "out" / "digits" / "table.tex").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstages: {teacher: {stpes: 3}}\n")
    failed = _cli(bad, "--runs-dir", tmp_path / "runs")
    assert failed.exit_code == 2 and failed.output.startswith("error: ") and failed.output.count("\n") == 1
    missing = _cli(ROOT / "recipes" / "digits.yaml", "--compare", "no_such_recipe", "--runs-dir", tmp_path / "runs")
    assert missing.exit_code == 2 and "--compare no_such_recipe" in missing.output

"""The report: synthetic long-format metrics rows, written where the evaluation worker writes them (each planned
evaluation's metrics.json, found through the run's manifest), compiled beside the paper's numbers
(results/baselines/sCM_paper.csv); seeds averaged, diverged runs marked, rows of evaluations the run did not plan
left out, --compare rows (a user's method) added, plots, LaTeX and CSV written, and the command's exit codes."""
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from harness import store
from harness.cli import app
from harness.recipe.jobs import EvalJob
from harness.recipe.load import load_recipe
from harness.recipe.manifest import read_manifest, RunManifest, write_manifest
from harness.recipe.planner import plan_jobs
from harness.report.paper import load_baselines
from harness.report.report import write_report

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2]
SEED_OFFSET = {0: 0.0, 1: 0.1, 2: 0.2}  # FID offsets per seed: mean +0.1, sample std 0.1
PARAMS = {"S": 280.2, "M": 497.8, "L": 777.6, "XL": 1119.4, "XXL": 1523.4}
PAPER_NAMES = {"diffusion": "TrigFlow teacher", "sct": "sCT", "scd": "sCD"}  # the csv's names of our methods
PROTOCOL = dict(ema="power sigma_rel=0.05", num_samples=20, sample_seconds=1.0, grid="", reference="synthetic-ref",
                reference_hash="abc123", reference_count=1797, real_vs_real_half_fid=None,
                features="digits-classifier-64d", code_version="deadbee", date="2025-01-02T03:04:05",
                train_seconds=60.0, intermediate=False, diverged=False)


def paper_value(table: str, method: str, size: str, nfe: int, metric: str = "fid") -> float:
    base = load_baselines()
    row = base[(base.table == table) & (base.method == method) & (base["size"] == size) & (base.nfe == nfe)
               & (base.metric == metric)]
    return float(row.value.iloc[0])


def paper_fid(table: str, method: str, size: str, nfe: int) -> float:
    return paper_value(table, method, size, nfe)


def our_fid(method: str, size: str | None, nfe: int, guidance: float, seed: int) -> float:
    """Paper-like numbers with a known offset: 0.5 above the paper's Table 2 (at its guidance scale), plus the
    seed's."""
    name = PAPER_NAMES.get(method)
    base = paper_fid("table2", name, size, 126 if method == "diffusion" else nfe) if name and size else 3.0 + nfe
    return base + 0.5 + SEED_OFFSET[seed] + 0.01 * (guidance - 1.0)


def worker_rows(job: EvalJob, fid_of=our_fid) -> list[dict]:
    """One row per (setting, metric), as harness/run/evaluate.py writes them: the job's own labels (job_context,
    checkpoint_context), its method's sampling settings, and fid, kid (and fd_dinov2 where the recipe asks)."""
    train = job.train
    context = {"recipe": job.recipe, "variant": job.variant, "stage": train.stage, "job": train.id,
               "evaluation": job.id, "teacher_job": train.parent_id, "method": train.method_class.name,
               "method_label": train.method_class.label, "size": train.size, "seed": train.seed,
               "params_m": PARAMS.get(train.size, 0.1), "checkpoint_step": train.steps,
               "checkpoint": train.final_checkpoint.name, **PROTOCOL}
    rows = []
    for setting in train.method().sample_settings(job.sampling):
        nfe = setting.nfe(train.data.class_conditional)
        fid = fid_of(train.method_class.name, train.size, nfe, setting.guidance, train.seed)
        metrics = {"fid": fid, "kid": fid / 1000} | ({"fd_dinov2": 10 * fid} if job.evaluation.fd_dinov2 else {})
        common = {**context, "sampler": setting.sampler, "steps": setting.steps, "nfe": nfe,
                  "guidance": setting.guidance}
        rows += [{**common, "metric": metric, "value": value} for metric, value in metrics.items()
                 if job.sampling.reports(metric, setting.guidance)]  # each metric at its own scales, as evaluate does
    return rows


def write_metrics(job: EvalJob, rows: list[dict], folder: Path | None = None) -> None:
    path = (folder or job.path) / "metrics.json"
    store.write_json(path, {"key": {"checkpoint": str(job.train.final_checkpoint), "stamp": [1, 2]}, "rows": rows})


def write_runs(source: Path, runs: Path, overrides=(), fid_of=our_fid, edit=lambda job, rows: None) -> RunManifest:
    """A run of the recipe file as `scm-bench run` leaves it: its manifest (runs/NAME/run.json) and a metrics.json
    for every evaluation it planned; `edit` may change an evaluation's rows before they are written."""
    recipe = load_recipe(source, list(overrides))
    plan = plan_jobs(recipe, runs)
    write_manifest(runs, source, plan, list(overrides), False, "local")
    for job in plan.evaluate:
        rows = worker_rows(job, fid_of)
        edit(job, rows)
        write_metrics(job, rows)
    return read_manifest(runs, recipe.name)


def seeds(values=SEEDS) -> list[str]:
    return [f"sweep.seed={values}"]


def diverge(job: EvalJob, rows: list[dict]) -> None:
    """Size M seed 2 sCD diverged; every size XXL sCD diverged (as diverged_rows writes them: NaN, no samples)."""
    train = job.train
    if train.method_class.name == "scd" and ((train.size == "M" and train.seed == 2) or train.size == "XXL"):
        for row in rows:
            row.update(diverged=True, value=float("nan"), num_samples=0, checkpoint_step=1234, diverged_step=1234,
                       diverged_term="loss", diverged_message="loss is nan")


def stale_rows(runs: Path) -> list[Path]:
    """Rows the run never planned, in other evaluation folders of its size L seed 0 teacher: one evaluation of other
    sampling settings (32 -> 16 solver steps), and one of the same setting with other numbers; both FID 99."""
    recipe = load_recipe(ROOT / "recipes" / "table2_scd.yaml", [*seeds(), "stages.teacher.sampling.steps=16"])
    job = next(job for job in plan_jobs(recipe, runs).evaluate
               if job.train.stage == "teacher" and job.train.size == "L" and job.train.seed == 0)
    stale = lambda method, size, nfe, guidance, seed: 99.0  # noqa: E731
    write_metrics(job, worker_rows(job, stale))
    other = job.train.path / "evaluations" / "from-an-older-run"
    same_setting = [{**row, "evaluation": "from-an-older-run", "nfe": 126} for row in worker_rows(job, stale)]
    write_metrics(job, same_setting, other)
    return [job.path / "metrics.json", other / "metrics.json"]


@pytest.fixture(scope="module")
def table2(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table2")
    manifest = write_runs(ROOT / "recipes" / "table2_scd.yaml", tmp / "runs", seeds(), edit=diverge)
    stale = stale_rows(tmp / "runs")
    table = write_report(manifest, tmp / "runs", tmp / "results")
    return table, tmp / "results" / manifest.recipe, manifest, stale


def _row(table, method, size, nfe, guidance=None, source="ours"):
    rows = table[(table.method == method) & (table["size"] == size) & (table.nfe == nfe) & (table.source == source)]
    return rows if guidance is None else rows[rows.guidance == guidance]


def test_the_seed_sweep_plans_every_seed():
    plan = plan_jobs(load_recipe(ROOT / "recipes" / "table2_scd.yaml", seeds()), Path("runs"))
    assert len(plan.train) == len(plan.evaluate) == 5 * 2 * 3  # sizes x (teacher, sCD) x seeds
    assert sorted({(job.size, job.seed) for job in plan.train}) == sorted(
        (size, seed) for size in PARAMS for seed in SEEDS)


def test_ours_beside_the_paper_with_difference_and_ratio(table2):
    table, *_ = table2
    row = _row(table, "scd", "S", 1, 1.5).iloc[0]  # the paper's S sCD 1-step is at guidance 1.5
    paper = paper_fid("table2", "sCD", "S", 1)
    assert row.paper_fid == pytest.approx(paper)
    assert row.fid == pytest.approx(paper + 0.5 + 0.1 + 0.005)  # mean over seeds
    assert row.fid_diff == pytest.approx(0.605) and row.paper_ratio == pytest.approx(row.fid / paper)
    assert (row.stage, row.method_label, row.sampler, bool(row.base)) == ("scd", "sCD", "consistency", False)
    assert math.isnan(_row(table, "scd", "S", 1, 1.4).iloc[0].paper_fid)  # not the paper's scale: nothing beside
    teacher = _row(table, "diffusion", "S", 126).iloc[0]  # DPM-Solver-2S, 32 steps = 63 NFE, x2 with CFG
    assert (teacher.stage, teacher.method_label, teacher.sampler) == ("teacher", "TrigFlow diffusion", "dpm-solver-2s")
    assert bool(teacher.base) and teacher.guidance == 1.4
    assert teacher.paper_fid == pytest.approx(paper_fid("table2", "TrigFlow teacher", "S", 126))
    assert teacher.fid_ratio == pytest.approx(1.0)
    per_seed = [our_fid("scd", "S", 1, 1.5, seed) / our_fid("diffusion", "S", 126, 1.4, seed) for seed in SEEDS]
    assert row.fid_ratio == pytest.approx(sum(per_seed) / 3)  # each run over its own teacher, then the mean
    assert list(table.drop_duplicates("size")["size"]) == ["S", "M", "L", "XL", "XXL"]  # Table 2's order
    assert teacher.params_m == pytest.approx(280.2)
    two_step = _row(table, "scd", "S", 2, 2.0).iloc[0]  # FD_DINOv2 at its own scale (Table 6), the paper's beside
    assert two_step.fd_dinov2 == pytest.approx(10 * our_fid("scd", "S", 2, 2.0, 0) + 1.0)  # mean over the seeds
    assert two_step.paper_fd_dinov2 == pytest.approx(paper_value("table2", "sCD", "S", 2, "fd_dinov2"))
    assert math.isnan(two_step.fid)  # FID is not reported at FD_DINOv2's scale
    assert math.isnan(_row(table, "scd", "S", 2, 1.4).iloc[0].fd_dinov2)  # nor FD_DINOv2 at FID's


def test_seeds_give_mean_std_and_n(table2):
    table, out, *_ = table2
    row = _row(table, "scd", "S", 2, 1.4).iloc[0]
    assert (row.n, row.n_diverged) == (3, 0) and row.fid_std == pytest.approx(0.1)
    assert "± 0.100 (n=3)" in (out / "table.md").read_text()


def test_diverged_runs_are_marked_and_left_out(table2):
    table, out, *_ = table2
    some = _row(table, "scd", "M", 1, 1.3).iloc[0]
    assert (some.n, some.n_diverged) == (2, 1)
    assert some.fid == pytest.approx(paper_fid("table2", "sCD", "M", 1) + 0.5 + 0.05 + 0.003)
    every = _row(table, "scd", "XXL", 1, 1.3).iloc[0]
    assert math.isnan(every.fid) and (every.n, every.n_diverged) == (0, 3)
    markdown = out / "table.md"
    line = next(x for x in markdown.read_text().splitlines() if "| sCD | XXL |" in x and "| 1 | 1.3 |" in x)
    assert "| diverged |" in line and "± 0.071 (n=2, 1 diverged)" in markdown.read_text()


def test_rows_of_evaluations_the_run_did_not_plan_are_left_out(table2):
    """metrics.json files in other evaluation folders of the run's own training jobs (another sampling setting, or
    the same setting evaluated before) never reach the report: it reads the evaluations in the manifest."""
    table, out, manifest, stale = table2
    assert all(path.is_file() for path in stale)
    assert not {path.parent.name for path in stale} & {job.id for job in manifest.plan.evaluate}
    planned = {job.train.path for job in manifest.plan.evaluate if job.train.stage == "teacher"}
    assert all(path.parents[2] in planned for path in stale)  # training jobs of the run's own
    teacher = _row(table, "diffusion", "L", 126).iloc[0]
    assert teacher.n == 3 and teacher.fid == pytest.approx(paper_fid("table2", "TrigFlow teacher", "L", 126)
                                                           + 0.5 + 0.1 + 0.002)
    assert _row(table, "diffusion", "L", 62).empty and set(table.nfe) == {1, 2, 126}  # 16 steps: 31 NFE x2
    assert table.fid.max() < 50 and "99.000" not in (out / "table.md").read_text()


def test_files_written(table2):
    _, out, *_ = table2
    csv = pd.read_csv(out / "table.csv")
    assert {"fid", "fid_std", "n", "n_diverged", "paper_fid", "fid_diff", "paper_ratio", "fid_ratio",
            "kid", "fd_dinov2", "method_label", "base"} <= set(csv.columns)
    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and r"\bottomrule" in tex
    for name in ("fid_vs_size.png", "fid_vs_size.pdf", "fid_vs_nfe.png", "fid_vs_nfe.pdf"):
        assert (out / name).stat().st_size > 1000
    assert (out / "fid_vs_size.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "fid_vs_size.pdf").read_bytes()[:4] == b"%PDF"
    markdown = (out / "table.md").read_text()
    assert "![fid_vs_size](fid_vs_size.png)" in markdown and "Protocol: features digits-classifier-64d" in markdown
    assert "EDM2" in markdown  # the paper's other rows of Table 2, for context


def users_recipe(tmp_path: Path) -> Path:
    """A user's copy of fig6_scaling_512 under its own name: no sCT, and its student is the user's method (sCD
    under the name fastcm, tests/report_fixtures.py), so its student jobs are its own; the teachers are shared."""
    raw = yaml.safe_load((ROOT / "recipes" / "fig6_scaling_512.yaml").read_text())
    raw["name"] = "fastcm"
    del raw["stages"]["sct"]
    raw["stages"]["scd"]["method"] = "report_fixtures:FastCM"
    raw["sweep"]["size"] = [{k: v for k, v in variant.items() if not k.startswith("stages.sct.")}
                            for variant in raw["sweep"]["size"]]
    path = tmp_path / "recipes" / "fastcm.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # keys in file order, so the sizes stay S..XXL
    return path


def test_compare_adds_a_users_method_to_tables_and_plots(tmp_path):
    """--compare fastcm: the run of a user's recipe (fastcm.yaml) beside ours (fig6_scaling_512) and the paper."""
    runs = tmp_path / "runs"
    ours = write_runs(ROOT / "recipes" / "fig6_scaling_512.yaml", runs, seeds([0]))
    assert {(job.size, job.method_class.name) for job in ours.plan.train} == {
        (size, method) for size in PARAMS for method in ("diffusion", "sct", "scd")}  # each size: both students

    def users_fid(method, size, nfe, guidance, seed):
        return 2.0 + 0.1 * nfe if method == "fastcm" else our_fid(method, size, nfe, guidance, seed)

    users_file = users_recipe(tmp_path)
    mine = write_runs(users_file, runs, seeds([0]), fid_of=users_fid)
    table = write_report(ours, runs, tmp_path / "results", compare=["fastcm"])
    users = table[table.source == "fastcm"]
    assert set(users.method) == {"diffusion", "fastcm"} and set(users["size"]) == set(PARAMS)
    assert set(users.method_label) == {"TrigFlow diffusion", "fastcm"}
    students = users[users.method == "fastcm"]
    # NFE 1, 2 x the scales of FID and FD_DINOv2 together: 3 for S and M, 4 for L, XL, XXL (sCM Table 6)
    assert len(students) == 2 * (3 + 3 + 4 + 4 + 4)
    students = students[students.fid.notna()]  # FID at its own two scales per size
    assert len(students) == 2 * 2 * 5 and students.fid.eq(students.nfe * 0.1 + 2.0).all()
    assert students.paper_fid.isna().all()
    teachers = users[(users.method == "diffusion") & users.fid.notna()].set_index("size").fid
    ours_teachers = table[(table.source == "ours") & (table.method == "diffusion") & table.fid.notna()].set_index(
        "size").fid
    assert teachers.sort_index().tolist() == pytest.approx(ours_teachers.sort_index().tolist())  # one shared job
    assert {job.train.id for job in mine.plan.evaluate if job.train.stage == "teacher"} == {
        job.train.id for job in ours.plan.evaluate if job.train.stage == "teacher"}
    assert students.fid_ratio.tolist() == pytest.approx((students.fid / students["size"].map(teachers)).tolist())
    sct = _row(table, "sct", "XL", 2).iloc[0]
    assert sct.paper_fid == pytest.approx(paper_fid("table2", "sCT", "XL", 2))  # Fig. 6 at 512 = Table 2's numbers
    assert set(table[table.source == "ours"].method) == {"diffusion", "sct", "scd"}
    out = tmp_path / "results" / "fig6_scaling_512"
    assert "| fastcm | " in (out / "table.md").read_text()
    assert (out / "fid_vs_size.pdf").stat().st_size > 1000 and (out / "fid_vs_nfe.png").stat().st_size > 1000
    by_file = write_report(ours, runs, tmp_path / "by-file", compare=[str(users_file)])
    # named by the file's stem
    assert by_file[by_file.source == "fastcm"].fid.tolist() == pytest.approx(users.fid.tolist(), nan_ok=True)


DIGITS = {("diffusion", 35): (6.2502, 0.9728), ("sct", 1): (11.5534, 0.9439), ("sct", 2): (7.3955, 0.9533),
          ("scd", 1): (10.9543, 0.9483), ("scd", 2): (7.2784, 0.9594)}  # FID, class accuracy of results/digits


def test_digits_rows_like_the_real_ones(tmp_path):
    """The shipped digits recipe, values of results/digits/table.csv: no paper table, class accuracy, grids."""
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"\x89PNG fake")

    def shaped(job, rows):
        for row in rows:
            fid, accuracy = DIGITS[row["method"], row["nfe"]]
            row.update(params_m=0.17, grid=str(grid), real_vs_real_half_fid=10.282, num_samples=1800)
            row["value"] = fid if row["metric"] == "fid" else fid / 1000
        rows += [{**row, "metric": "class_accuracy", "value": DIGITS[row["method"], row["nfe"]][1]}
                 for row in rows if row["metric"] == "fid"]

    manifest = write_runs(ROOT / "recipes" / "digits.yaml", tmp_path / "runs", edit=shaped)
    table = write_report(manifest, tmp_path / "runs", tmp_path / "results")
    assert list(table.method) == ["diffusion", "sct", "sct", "scd", "scd"] and list(table.nfe) == [35, 1, 2, 1, 2]
    assert list(table.stage) == ["teacher", "sct", "sct", "scd", "scd"] and list(table.base) == [True] + [False] * 4
    assert table.fid_ratio.iloc[0] == 1.0 and table.fid_ratio.iloc[1] == pytest.approx(11.5534 / 6.2502)
    assert table.class_accuracy.iloc[4] == pytest.approx(0.9594) and table.kid.iloc[0] == pytest.approx(6.2502e-3)
    out = tmp_path / "results" / "digits"
    markdown = (out / "table.md").read_text()
    assert markdown.count("[samples](samples/") == 5 and "paper FID" not in markdown and "10.282" in markdown
    assert (out / "samples" / "ours-scd-nfe-2.png").is_file()
    assert (out / "samples" / "ours-teacher-nfe-35.png").is_file()
    assert (out / "fid_vs_nfe.png").is_file() and not (out / "fid_vs_size.png").exists()  # one size: no scaling plot


def test_nothing_finished_gives_none(tmp_path):
    source = ROOT / "recipes" / "digits.yaml"
    plan = plan_jobs(load_recipe(source), tmp_path / "runs")
    manifest = write_manifest(tmp_path / "runs", source, plan, [], False, "local")  # planned, nothing evaluated
    assert write_report(manifest, tmp_path / "runs", tmp_path / "results") is None
    assert not (tmp_path / "results").exists()


def _cli(*args):
    return CliRunner().invoke(app, ["report", *(str(a) for a in args)])


def test_cli_prints_the_table_and_fails_cleanly_on_bad_input(tmp_path):
    digits = ROOT / "recipes" / "digits.yaml"
    write_runs(digits, tmp_path / "runs")
    done = _cli(digits, "--runs-dir", tmp_path / "runs", "--results-dir", tmp_path / "out")
    assert done.exit_code == 0, done.output
    assert "sCD" in done.output and (tmp_path / "out" / "digits" / "table.tex").is_file()
    bad = tmp_path / "bad.yaml"  # a recipe whose name has no run under --runs-dir
    bad.write_text("name: bad\nstages: {teacher: {stpes: 3}}\n")
    failed = _cli(bad, "--runs-dir", tmp_path / "runs")
    assert failed.exit_code == 2 and failed.output.startswith("error: ") and failed.output.count("\n") == 1
    assert "no run of bad" in failed.output
    missing = _cli(digits, "--compare", "no_such_recipe", "--runs-dir", tmp_path / "runs")
    assert missing.exit_code == 2 and missing.output.startswith("error: --compare no_such_recipe")
    assert missing.output.count("\n") == 1
    plan = plan_jobs(load_recipe(digits), tmp_path / "unfinished")
    write_manifest(tmp_path / "unfinished", digits, plan, [], False, "local")
    nothing = _cli(digits, "--runs-dir", tmp_path / "unfinished", "--results-dir", tmp_path / "out2")
    assert nothing.exit_code == 1 and "no finished evaluations" in nothing.output

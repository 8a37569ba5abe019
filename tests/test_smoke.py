"""`--smoke`: every shipped recipe runs end to end at toy scale on the CPU (all stages and sweep variants)."""
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.launch import expand_jobs, run_recipe
from harness.recipe import load_recipe
from harness.report import write_report
from harness.smoke import smoke_recipe
from harness.sweep import expand_sweep

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))


class Quiet:
    def update(self, name, info):
        pass


def _expected_rows(recipe) -> int:
    """One row per teacher step count, and per student NFE (x guidance scales for a student told the scale)."""
    count = 0
    for job in expand_jobs(recipe, Path("unused")):
        if job["method"] == "teacher":
            count += len(recipe.evaluation.teacher_step_list)
            continue
        ev = recipe.evaluation
        told = recipe.network.guidance_input and job["method"] == "scd"
        count += len(ev.consistency_nfe) * (len(ev.student_guidance) if told else 1)
    return count


def test_smoke_keeps_what_matters_and_shrinks_what_costs():
    recipe = load_recipe(ROOT / "recipes" / "fig6_scaling_512.yaml")
    smoke = smoke_recipe(recipe)
    assert smoke.name == "fig6_scaling_512-smoke" and smoke.executor == "local"
    assert [v.variant for v in expand_sweep(smoke)] == [v.variant for v in expand_sweep(recipe)]
    for real, small in zip(expand_sweep(recipe), expand_sweep(smoke)):
        assert small.network.size == real.network.size and small.network.channels == 32
        assert small.data.name == "synthetic" and small.data.shape[0] == 4 and small.data.latents
        for method in ("teacher", "sct", "scd"):
            if real.stage(method) is None:
                assert small.stage(method) is None
                continue
            assert small.stage(method).steps == 2
            assert small.stage(method).dropout == real.stage(method).dropout  # per-size settings survive
            assert small.stage(method).guidance == real.stage(method).guidance


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_runs_as_a_smoke_test(tmp_path, name):
    recipe = smoke_recipe(load_recipe(ROOT / "recipes" / name))
    rows = run_recipe(recipe, tmp_path / "runs", "debug", Quiet())
    final = [r for r in rows if r["metric"] == "fid" and not r["intermediate"]]
    assert len(final) == _expected_rows(recipe)
    during = [r for r in rows if r["metric"] == "fid" and r["intermediate"]]  # FID over training: students at step 1
    assert len(during) == sum(r["method"] != "teacher" for r in final) * len(recipe.evaluation.during_training)
    assert all(r["checkpoint_step"] == 1 and r["method"] != "teacher" for r in during)
    assert all(math.isfinite(r["value"]) for r in rows) and all(r["value"] >= 0 for r in rows if r["metric"] == "fid")
    assert {r["variant"] for r in rows} == {v.variant for v in expand_sweep(recipe)} or not recipe.sweep
    for job in expand_jobs(recipe, tmp_path / "runs"):
        assert (Path(job["run_dir"]) / "checkpoints" / "step-00000002.pt").is_file()
    table = write_report(recipe, tmp_path / "runs", tmp_path / "results")  # every variant's rows reach the table
    settings = {(re.sub(r"(^|,)seed=[^,]*", "", r["variant"]), r["method"], r["nfe"], r["guidance"]) for r in final}
    assert table is not None and len(table) >= len(settings)  # seeds of a setting are one row
    if "size" in recipe.sweep and recipe.stages.sct is not None:  # a size sweep gets its Fig. 6-style plot
        assert (tmp_path / "results" / recipe.name / "fid_vs_size.png").is_file()
    assert (tmp_path / "results" / recipe.name / "fid_over_training.png").is_file() == bool(during)


def test_smoke_run_and_report_from_the_command_line(tmp_path):
    """The CLI path a user takes, with real local processes, on a swept paper recipe, then its report."""
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "harness.cli", *args, "--runs-dir", str(tmp_path / "runs")],
                              capture_output=True, text=True, cwd=ROOT)

    recipe = str(ROOT / "recipes" / "table1_imagenet64.yaml")
    done = cli("run", recipe, "--smoke")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "metrics rows in" in done.stdout
    shown = cli("report", recipe, "--smoke", "--results-dir", str(tmp_path / "results"))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert (tmp_path / "results" / "table1_imagenet64-smoke" / "table.md").is_file()

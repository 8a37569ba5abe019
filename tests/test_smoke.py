"""`--smoke`: every shipped recipe runs end to end at toy scale on the CPU (all stages and sweep variants)."""
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.recipe.load import load_recipe
from harness.recipe.manifest import read_manifest
from harness.recipe.smoke import smoke_recipe
from harness.recipe.sweep import expand_sweep
from harness.report.report import write_report
from harness.run.runner import run_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))


class Quiet:
    def update(self, name, info):
        pass


def _expected_rows(plan) -> int:
    """One FID row per sampling setting of each evaluation: each step count (x guidance scale at which FID is
    reported) of its sampling block."""
    count = 0
    for job in plan.evaluate:
        steps, guidance = job.sampling.steps, job.sampling.guidance
        scales = [s for s in (guidance if isinstance(guidance, list) else [guidance]) if job.sampling.reports("fid", s)]
        count += (len(steps) if isinstance(steps, list) else 1) * len(scales)
    return count


def test_smoke_keeps_what_matters_and_shrinks_what_costs():
    recipe = load_recipe(ROOT / "recipes" / "fig6_scaling_512.yaml")
    smoke = smoke_recipe(recipe)
    assert smoke.name == "fig6_scaling_512-smoke" and smoke.executor == "local"
    assert [v.variant for v in expand_sweep(smoke)] == [v.variant for v in expand_sweep(recipe)]
    for real, small in zip(expand_sweep(recipe), expand_sweep(smoke)):
        assert small.network.size == real.network.size and small.network.channels == 32
        assert small.data.name == "synthetic" and small.data.shape[0] == 4 and small.data.latents
        assert list(small.stages) == list(real.stages) == ["teacher", "sct", "scd"]
        for name, stage in small.stages.items():
            assert stage.steps == 2 and stage.method == real.stages[name].method
            assert stage.dropout == real.stages[name].dropout  # per-size settings survive
            assert stage.settings == real.stages[name].settings  # the method's own (guidance, tangent, ...)
        assert small.stages["teacher"].sampling.steps == 2 and real.stages["teacher"].sampling.steps == 32
        assert small.stages["scd"].sampling == real.stages["scd"].sampling  # per-size scales told to sCD survive


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_runs_as_a_smoke_test(tmp_path, name):
    path = ROOT / "recipes" / name
    recipe = smoke_recipe(load_recipe(path))
    rows = run_recipe(recipe, path, tmp_path / "runs", "debug", Quiet())
    manifest = read_manifest(tmp_path / "runs", recipe.name)
    final = [r for r in rows if r["metric"] == "fid" and not r["intermediate"]]
    assert len(final) == _expected_rows(manifest.plan)
    during = [r for r in rows if r["metric"] == "fid" and r["intermediate"]]  # FID over training at step 1
    expected_during = sum(len(job.during_training) * len([r for r in final if r["evaluation"] == job.id])
                          for job in manifest.plan.evaluate)
    assert len(during) == expected_during and all(r["checkpoint_step"] == 1 for r in during)
    assert all(math.isfinite(r["value"]) for r in rows) and all(r["value"] >= 0 for r in rows if r["metric"] == "fid")
    axes = {v.variant for v in expand_sweep(recipe)}
    assert all(set(r["variant"].split(",")) <= set(",".join(axes).split(",")) | {""} for r in rows)
    for job in manifest.plan.train:
        assert (job.path / "checkpoints" / "step-00000002.pt").is_file()
    table = write_report(manifest, tmp_path / "runs", tmp_path / "results")  # every variant's rows reach the table
    settings = {(re.sub(r"(^|,)seed=[^,]*", "", r["variant"]), r["stage"], r["nfe"], r["guidance"]) for r in final}
    assert table is not None and len(table) >= len(settings)  # seeds of a setting are one row
    if "size" in recipe.sweep and len(recipe.stages) > 1:  # a size sweep gets its Fig. 6-style plot
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
    assert "metrics rows in" in done.stdout and "--smoke" in done.stdout.split("next:")[1]
    shown = cli("report", recipe, "--smoke", "--results-dir", str(tmp_path / "results"))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert (tmp_path / "results" / "table1_imagenet64-smoke" / "table.md").is_file()

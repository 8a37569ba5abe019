"""A method from outside scm/ and harness/ (tests/plugins/uniform_ct: one file, its own dist-info with an entry
point in the group scm_bench.methods) found by name, run end to end from a recipe with --smoke, and reported
beside the built-ins with --compare; and the other ways to name a method or a weights source."""
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from helpers import ROOT, tiny_recipe

PLUGIN = ROOT / "tests" / "plugins" / "uniform_ct"


@pytest.fixture
def installed(monkeypatch):
    """The plugin's folder (with its dist-info) on the path, as `pip install` would leave it."""
    import importlib

    monkeypatch.syspath_prepend(str(PLUGIN))
    importlib.invalidate_caches()


def test_an_installed_method_is_found_by_its_entry_point(installed):
    from scm.methods import available, installed as entry_points, method_class

    assert "uniform-ct" in entry_points() and "uniform-ct" in available()
    cls = method_class("uniform-ct")
    assert cls.__module__ == "scm_bench_uniform_ct" and cls.name == "uniform-ct"


def test_an_unknown_name_says_what_exists_and_how_to_add_a_method():
    from scm.methods import UnknownMethod, method_class

    with pytest.raises(UnknownMethod, match="'no-such-method' is not a known method; use one of diffusion, "
                                            "discrete-ct, meanflow, multistep-scd, scd, scd-vsd, sct.*vsd.*, or "
                                            "module:Class .* entry point in the group "
                                            "scm_bench.methods"):
        method_class("no-such-method")


def test_a_module_path_names_a_method_without_installing_it(monkeypatch):
    from scm.methods import UnknownMethod, method_class

    monkeypatch.syspath_prepend(str(PLUGIN))  # importable, no entry point needed
    assert method_class("scm_bench_uniform_ct:UniformCT").name == "uniform-ct"
    with pytest.raises(UnknownMethod, match="has no NoSuchClass; check the class name"):
        method_class("scm_bench_uniform_ct:NoSuchClass")
    with pytest.raises(UnknownMethod, match="is not a subclass of scm.methods.Method"):
        method_class("scm_bench_uniform_ct:UniformTimeSettings")


def test_its_settings_are_validated_with_the_stage_and_the_field(installed, tmp_path):
    from harness.recipe.load import load_recipe
    from harness.recipe.text import RecipeError

    path = PLUGIN / "uniform_ct.yaml"
    assert load_recipe(path).stages["student"].settings.t_high == 1.5
    with pytest.raises(RecipeError, match=r"stages\.student\.t_high: Input should be less than or equal to 1\.57"):
        load_recipe(path, ["stages.student.t_high=2.0"])
    with pytest.raises(RecipeError, match=r"stages\.student\.p_mean: unknown field for this stage's method"):
        load_recipe(path, ["stages.student.p_mean=-1.0"])


def test_its_draws_are_uniform_in_the_range_and_its_loss_is_sct_s_on_them(installed):
    import torch

    from scm.methods import Networks, method_class
    from scm.objectives import consistency_loss
    from scm.weighting import AdaptiveWeight
    from conftest import make_toy_unet

    method = method_class("uniform-ct")(method_class("uniform-ct").Settings(t_low=0.3, t_high=0.9))
    draws = method.draw((4000, 1, 8, 8), torch.Generator().manual_seed(0), "cpu")
    assert 0.3 <= float(draws.t.min()) and float(draws.t.max()) <= 0.9
    assert abs(float(draws.t.mean()) - 0.6) < 0.01 and abs(float(draws.z.std()) - 0.5) < 0.01
    net, weight = make_toy_unet(dtype=torch.float32), AdaptiveWeight()
    x0, labels = torch.randn(4, 1, 8, 8), torch.arange(4)
    mine = method.loss(Networks({"net": net}, {"weight": weight}), x0, labels, draws[:4], 3)[0]
    direct = consistency_loss(net, weight, x0, labels, 3, 0.0, 1.0, method.tangent(), noise=draws[:4])[0]
    assert torch.equal(mine, direct)


def _cli(*args, env=None):
    done = subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_plugged_in_method_runs_from_a_recipe_and_is_reported_beside_the_built_ins(tmp_path):
    """scm-bench run for the digits (built-ins) and for the plugin's recipe, whose student starts from digits'
    teacher: the store trains that teacher once; `report --compare uniform_ct` puts the plugin's rows beside ours."""
    env = {**os.environ, "PYTHONPATH": f"{PLUGIN}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    runs, results = tmp_path / "runs", tmp_path / "results"
    _cli("run", "recipes/digits.yaml", "--smoke", "--runs-dir", runs, env=env)
    plugged = _cli("run", PLUGIN / "uniform_ct.yaml", "--smoke", "--runs-dir", runs, env=env)
    assert "metrics rows" in plugged.stdout
    assert len(list((runs / "store").glob("diffusion-*"))) == 1  # the teacher, trained once for both recipes
    assert len(list((runs / "store").glob("uniform-ct-*"))) == 1
    _cli("report", "recipes/digits.yaml", "--smoke", "--compare", "uniform_ct", "--runs-dir", runs,
         "--results-dir", results, env=env)
    table = pd.read_csv(results / "digits-smoke" / "table.csv")
    theirs = table[table.source == "uniform_ct"]
    assert sorted(zip(theirs.method, theirs.nfe)) == [("uniform-ct", 1), ("uniform-ct", 2)]
    assert set(table[table.source == "ours"].method) == {"diffusion", "sct", "scd"}
    assert theirs.fid.notna().all() and theirs.fid_ratio.notna().all()  # over the shared teacher's FID
    assert "| uniform_ct |" in (results / "digits-smoke" / "table.md").read_text()


def test_a_stage_can_start_from_another_recipe_s_stage_or_from_a_checkpoint(tmp_path):
    """`init: {recipe: FILE, stage: NAME}` plans that recipe's job (the same id, shared in the store); `init:
    {checkpoint: FILE}` reads a training checkpoint's EMA weights, and the student trains from it."""
    from harness.recipe.jobs import Checkpoint
    from harness.recipe.load import load_recipe
    from harness.recipe.planner import plan_jobs
    from harness.recipe.text import RecipeError
    from harness.run.train import train_stage

    path = tiny_recipe(tmp_path)
    teacher = next(job for job in plan_jobs(load_recipe(path), tmp_path / "runs").train if job.stage == "teacher")
    raw = yaml.safe_load(path.read_text())
    other = {**raw, "name": "other", "stages": {"student": {**raw["stages"]["sct"],
                                                            "init": {"recipe": str(path), "stage": "teacher"}}}}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    planned = plan_jobs(load_recipe(tmp_path / "other.yaml"), tmp_path / "runs").train
    assert [job.id for job in planned] == [teacher.id, planned[1].id] and planned[1].init.id == teacher.id
    train_stage(teacher, threads=1)
    other["stages"]["student"]["init"] = {"checkpoint": str(teacher.final_checkpoint)}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    (student,) = plan_jobs(load_recipe(tmp_path / "other.yaml"), tmp_path / "runs").train
    assert isinstance(student.init, Checkpoint)
    assert train_stage(student, threads=1).endswith("step-00000006.pt")
    other["stages"]["student"]["init"] = {"recipe": str(path), "stage": "techer"}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(RecipeError, match="stages.student.init: .* has no jobs for stage 'techer'; check the stage"):
        plan_jobs(load_recipe(tmp_path / "other.yaml"), tmp_path / "runs")

"""Sweep expansion: the grid, named axes, a stage's method as an axis, what jobs variants share, and the errors
for sweeps that cannot work."""
from pathlib import Path

import pytest
import yaml

from harness.recipe.load import load_recipe
from harness.recipe.planner import plan_jobs
from harness.recipe.smoke import smoke_recipe
from harness.recipe.sweep import expand_sweep
from harness.recipe.text import RecipeError
from helpers import ROOT, tiny_recipe


def _recipe(tmp_path, sweep, **changes):
    return load_recipe(tiny_recipe(tmp_path, sweep=sweep, **changes))


def test_grid_is_the_product_of_the_axes_in_order(tmp_path):
    recipe = _recipe(tmp_path, {"seed": [0, 1], "stages.sct.p_mean": [-1.0, -0.8]})
    variants = expand_sweep(recipe)
    assert [v.variant for v in variants] == ["seed=0,stages.sct.p_mean=-1.0", "seed=0,stages.sct.p_mean=-0.8",
                                             "seed=1,stages.sct.p_mean=-1.0", "seed=1,stages.sct.p_mean=-0.8"]
    assert [(v.seed, v.stages["sct"].settings.p_mean) for v in variants] == [(0, -1.0), (0, -0.8), (1, -1.0),
                                                                             (1, -0.8)]
    plan = plan_jobs(recipe, tmp_path / "runs")  # two teachers (one per seed), sCD shared within a seed
    stages = [job.stage for job in plan.train]
    assert (stages.count("teacher"), stages.count("scd"), stages.count("sct")) == (2, 2, 4)
    # a job is labelled with the axes it depends on: the sCD of seed 0 runs in two variants that differ in p_mean
    assert sorted(job.variant for job in plan.train if job.stage == "scd") == ["seed=0", "seed=1"]
    assert sorted(job.variant for job in plan.train if job.stage == "sct")[0] == "seed=0,stages.sct.p_mean=-0.8"


def test_named_axis_changes_keys_together(tmp_path):
    sweep = {"width": [{"label": "narrow", "network.channels": 16, "stages.scd.p_std": 1.2},
                       {"network.channels": 32, "stages.scd.p_std": 1.6}]}
    variants = expand_sweep(_recipe(tmp_path, sweep))
    assert [v.variant for v in variants] == ["width=narrow", "width=32"]
    assert variants[1].stages["scd"].settings.p_std == 1.6 and variants[1].network.channels == 32


def test_a_stage_s_method_is_an_axis_like_any_key(tmp_path):
    """discrete-time CT against sCT in one stage: the entry unsets sCT's tangent (null), which discrete-ct lacks."""
    sweep = {"objective": [{"label": "continuous"},
                           {"label": "N=16", "stages.sct.method": "discrete-ct", "stages.sct.discrete_steps": 16,
                            "stages.sct.tangent": None}]}
    variants = expand_sweep(_recipe(tmp_path, sweep))
    assert [v.stages["sct"].method for v in variants] == ["sct", "discrete-ct"]
    assert variants[1].stages["sct"].settings.discrete_steps == 16
    jobs = plan_jobs(_recipe(tmp_path, sweep), tmp_path / "runs").train
    assert sorted(job.id.split("-")[0] for job in jobs) == ["diffusion", "discrete", "scd", "sct"]
    with pytest.raises(RecipeError, match="stages.sct.tangent: unknown field"):  # without the null: a clear error
        expand_sweep(_recipe(tmp_path, {"objective": [{"stages.sct.method": "discrete-ct",
                                                        "stages.sct.discrete_steps": 16}]}))


def test_a_sweep_can_fill_an_absent_optional_section(tmp_path):
    variants = expand_sweep(_recipe(tmp_path, {"stages.teacher.resources.cpus_per_task": [1, 2]}))
    assert [v.stage_resources("teacher").cpus_per_task for v in variants] == [1, 2]


@pytest.mark.parametrize("sweep, expected", [
    ({"network.sise": ["S"]}, "sweep variant network.sise=S: network.sise: unknown field"),
    ({"seed": []}, "sweep.seed: empty list"),
    ({"stages.scd.method": ["scd", "dmd"]}, "sweep variant stages.scd.method=dmd: stages.scd.method: 'dmd' is not a "
                                            "known method"),
    ({"stages.teacher.batch_size": [30]}, "does not split"),
])
def test_bad_sweeps_name_the_problem(tmp_path, sweep, expected):
    with pytest.raises(RecipeError, match=expected):
        expand_sweep(_recipe(tmp_path, sweep, resources={"tasks_per_node": 4}))


def test_a_sweep_over_evaluation_settings_alone_shares_the_training(tmp_path):
    """Sampling is not part of a training job's identity: variants that only sample differently train once and are
    evaluated once each."""
    plan = plan_jobs(_recipe(tmp_path, {"stages.teacher.sampling.steps": [4, 8]}), tmp_path / "runs")
    assert len(plan.train) == 3 and len(plan.evaluate) == 4
    teacher = [job for job in plan.evaluate if job.train.stage == "teacher"]
    assert len({job.train.id for job in teacher}) == 1 and sorted(job.sampling.steps for job in teacher) == [4, 8]


def test_smoke_keeps_unconditional_data_unconditional_and_accumulation_in_sweeps():
    recipe = load_recipe(ROOT / "recipes" / "table1_cifar10.yaml")
    assert not smoke_recipe(recipe).data.class_conditional
    sized = load_recipe(ROOT / "recipes" / "table2_sct.yaml")
    by_size = {v.network.size: v for v in expand_sweep(smoke_recipe(sized))}
    real = {v.network.size: v for v in expand_sweep(sized)}
    for size, variant in by_size.items():
        assert (variant.stages["sct"].micro_batch is not None) == (real[size].stages["sct"].micro_batch is not None)
        assert variant.stages["sct"].precision in ("fp32", "bf16")


def test_recipe_files_with_sweeps_round_trip_through_yaml(tmp_path):
    """A sweep written in YAML (as users do) expands the same as the same mapping given in Python."""
    path = tmp_path / "r.yaml"
    raw = yaml.safe_load(Path(tiny_recipe(tmp_path)).read_text())
    raw["sweep"] = {"size": [{"network.channels": 16}, {"network.channels": 32}]}
    path.write_text(yaml.safe_dump(raw))
    assert [v.network.channels for v in expand_sweep(load_recipe(path))] == [16, 32]

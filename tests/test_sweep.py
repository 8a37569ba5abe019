"""Sweep expansion: the grid, named axes, the method axis, and the errors for sweeps that cannot work."""
from pathlib import Path

import pytest
import yaml

from harness.launch import expand_jobs
from harness.recipe import RecipeError, load_recipe
from harness.smoke import smoke_recipe
from harness.sweep import expand_sweep
from test_harness import ROOT, tiny_recipe


def _recipe(tmp_path, sweep, **changes):
    return load_recipe(tiny_recipe(tmp_path, sweep=sweep, **changes))


def test_grid_is_the_product_of_the_axes_in_order(tmp_path):
    recipe = _recipe(tmp_path, {"seed": [0, 1], "stages.sct.p_mean": [-1.0, -0.8]})
    variants = expand_sweep(recipe)
    assert [v.variant for v in variants] == ["seed=0,stages.sct.p_mean=-1.0", "seed=0,stages.sct.p_mean=-0.8",
                                             "seed=1,stages.sct.p_mean=-1.0", "seed=1,stages.sct.p_mean=-0.8"]
    assert [(v.seed, v.stages.sct.p_mean) for v in variants] == [(0, -1.0), (0, -0.8), (1, -1.0), (1, -0.8)]
    jobs = expand_jobs(recipe, tmp_path / "runs")  # two teachers (one per seed), sCD shared within a seed
    assert sum(j["method"] == "teacher" for j in jobs) == 2 and sum(j["method"] == "scd" for j in jobs) == 2
    assert sum(j["method"] == "sct" for j in jobs) == 4


def test_named_axis_changes_keys_together_and_method_axis_goes_last(tmp_path):
    sweep = {"method": ["sct", "scd"],
             "width": [{"label": "narrow", "network.channels": 16, "stages.scd.p_std": 1.2},
                       {"network.channels": 32, "stages.scd.p_std": 1.6}]}
    variants = expand_sweep(_recipe(tmp_path, sweep))
    assert [v.variant for v in variants] == ["width=narrow,method=sct", "width=narrow,method=scd",
                                             "width=32,method=sct", "width=32,method=scd"]
    assert variants[0].stages.scd is None and variants[0].stages.sct is not None
    assert variants[3].stages.sct is None and variants[3].stages.scd.p_std == 1.6
    assert variants[2].network.channels == 32


def test_a_sweep_can_fill_an_absent_optional_section(tmp_path):
    variants = expand_sweep(_recipe(tmp_path, {"stages.teacher.resources.cpus_per_task": [1, 2]}))
    assert [v.stage_resources("teacher").cpus_per_task for v in variants] == [1, 2]


@pytest.mark.parametrize("sweep, expected", [
    ({"network.sise": ["S"]}, "sweep variant network.sise=S: network.sise: unknown field"),
    ({"seed": []}, "sweep.seed: empty list"),
    ({"method": ["ect"]}, "sweep.method: 'ect' is not a student method"),
    ({"stages.teacher.batch_size": [30]}, "does not split"),
])
def test_bad_sweeps_name_the_problem(tmp_path, sweep, expected):
    with pytest.raises(RecipeError, match=expected):
        expand_sweep(_recipe(tmp_path, sweep, resources={"tasks_per_node": 4}))


def test_a_sweep_over_evaluation_settings_alone_is_refused(tmp_path):
    """Evaluation settings are not part of a training job's identity: such variants would silently collapse."""
    recipe = _recipe(tmp_path, {"evaluation.teacher_steps": [4, 8]})
    with pytest.raises(RecipeError, match="evaluate it differently"):
        expand_jobs(recipe, tmp_path / "runs")


def test_smoke_keeps_unconditional_data_unconditional_and_accumulation_in_sweeps():
    recipe = load_recipe(ROOT / "recipes" / "table1_cifar10.yaml")
    assert not smoke_recipe(recipe).data.class_conditional
    sized = load_recipe(ROOT / "recipes" / "table2_sct.yaml")
    by_size = {v.network.size: v for v in expand_sweep(smoke_recipe(sized))}
    real = {v.network.size: v for v in expand_sweep(sized)}
    for size, variant in by_size.items():
        assert (variant.stages.sct.micro_batch is not None) == (real[size].stages.sct.micro_batch is not None)
        assert variant.stages.sct.precision in ("fp32", "bf16")


def test_recipe_files_with_sweeps_round_trip_through_yaml(tmp_path):
    """A sweep written in YAML (as users do) expands the same as the same mapping given in Python."""
    path = tmp_path / "r.yaml"
    raw = yaml.safe_load(Path(tiny_recipe(tmp_path)).read_text())
    raw["sweep"] = {"size": [{"network.channels": 16}, {"network.channels": 32}]}
    path.write_text(yaml.safe_dump(raw))
    assert [v.network.channels for v in expand_sweep(load_recipe(path))] == [16, 32]

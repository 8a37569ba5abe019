"""Shared by the harness tests: a tiny recipe on the digits (new stage format), and typed jobs planned from it."""
from pathlib import Path

import yaml

from harness.recipe.load import load_recipe
from harness.recipe.planner import plan_jobs

ROOT = Path(__file__).resolve().parents[1]


def tiny_recipe(tmp_path: Path, name: str = "tiny", **changes) -> Path:
    """recipes/digits.yaml at toy size: 16 channels, 6 steps per stage at batch 32, 8 samples per class, a 4-step
    teacher sampler; `changes` replace top-level fields."""
    recipe = yaml.safe_load((ROOT / "recipes" / "digits.yaml").read_text())
    recipe["name"] = name
    recipe["network"]["channels"] = 16
    for stage in recipe["stages"].values():
        stage.update(steps=6, batch_size=32, checkpoint_every=4)
    recipe["stages"]["teacher"]["sampling"]["steps"] = 4
    recipe["evaluation"].update(samples_per_class=8)
    recipe.update(changes)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def planned(path: Path, runs: Path, overrides=()):
    """The plan of a recipe file (with --set overrides)."""
    return plan_jobs(load_recipe(path, list(overrides)), runs)


def stage_job(path: Path, runs: Path, stage: str, overrides=()):
    """The training job of one stage of a recipe without a sweep."""
    return next(job for job in planned(path, runs, overrides).train if job.stage == stage)


def evaluation_of(path: Path, runs: Path, stage: str, overrides=()):
    return next(job for job in planned(path, runs, overrides).evaluate if job.train.stage == stage)

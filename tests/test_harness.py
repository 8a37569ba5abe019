"""The thin harness path: recipe validation, a short real training run, and the whole pipeline at tiny scale."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def tiny_recipe(tmp_path: Path, **changes) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "digits.yaml").read_text())
    recipe["name"] = "tiny"
    recipe["network"]["channels"] = 16
    for stage in recipe["stages"].values():
        stage.update(steps=6, batch_size=32, checkpoint_every=4)
    recipe["evaluation"].update(samples_per_class=8, teacher_steps=4)
    for key, value in changes.items():
        recipe[key] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_shipped_recipes_validate():
    for path in (ROOT / "recipes").glob("*.yaml"):
        assert load_recipe(path).name == path.stem


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["stages"]["teacher"].update(stpes=10), "stages.teacher.stpes: unknown field"),
    (lambda r: r.update(netwrok={}), "netwrok: unknown field"),
    (lambda r: r["stages"]["teacher"].update(batch_size=0), "stages.teacher.batch_size"),
    (lambda r: r["network"].update(name="resnet"), "network.name"),
    (lambda r: r.update(name="../escape"), "name"),
    (lambda r: r["evaluation"].update(consistency_nfe=[0]), "evaluation.consistency_nfe"),
])
def test_bad_recipe_names_the_field(tmp_path, edit, expected):
    recipe = yaml.safe_load((ROOT / "recipes" / "digits.yaml").read_text())
    edit(recipe)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert str(path) in message and expected in message and "\n" not in message


@pytest.mark.parametrize("text, expected", [("", "YAML mapping"), ("a: [1, 2", "not valid YAML"),
                                            ("- 1\n- 2\n", "YAML mapping")])
def test_empty_or_broken_yaml(tmp_path, text, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=expected):
        load_recipe(path)


def test_cli_bad_recipe_exits_2_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nstages: {teacher: {steps: 5, lernrate: 1}}\n")
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert "stages.teacher.lernrate: unknown field" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_short_digits_training_lowers_loss(tmp_path):
    """A real teacher run on the digits: the loss falls and stays finite; the final checkpoint exists."""
    from harness.launch import plan_jobs
    from harness.train import train_stage

    recipe = load_recipe(tiny_recipe(tmp_path))
    job = plan_jobs(recipe, tmp_path / "runs")["teacher"]
    job["threads"] = 2
    recipe_dict = job["recipe"]
    recipe_dict["stages"]["teacher"].update(steps=150, batch_size=64, checkpoint_every=50)
    checkpoint = train_stage(job)
    history = __import__("torch").load(checkpoint, weights_only=True)["history"]
    losses = [h["mse"] for h in history]
    assert all(map(lambda v: v == v and abs(v) < 1e6, losses))
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_pipeline_end_to_end_and_resume(tmp_path):
    """teacher -> sCT, sCD -> evaluation -> report; a second run reuses every finished job."""
    from harness.launch import run_recipe
    from harness.report import write_report

    class Quiet:
        def update(self, name, info):
            pass

    recipe = load_recipe(tiny_recipe(tmp_path))
    rows = run_recipe(recipe, tmp_path / "runs", "local", Quiet())
    assert sorted((r["method"], r["nfe"]) for r in rows) == [("scd", 1), ("scd", 2), ("sct", 1), ("sct", 2),
                                                            ("teacher", 7)]
    assert all(r["fid"] > 0 and 0 <= r["class_accuracy"] <= 1 for r in rows)
    mtimes = {p: p.stat().st_mtime for p in (tmp_path / "runs" / "tiny").glob("*/metrics.json")}
    again = run_recipe(recipe, tmp_path / "runs", "local", Quiet())
    assert again == rows and all(p.stat().st_mtime == t for p, t in mtimes.items())
    table = write_report(recipe, tmp_path / "runs", tmp_path / "results")
    assert list(table.method) == ["teacher", "sct", "sct", "scd", "scd"]
    assert (tmp_path / "results" / "tiny" / "table.md").read_text().count("[samples](samples/") == 5
    assert table.fid_ratio.iloc[0] == 1.0

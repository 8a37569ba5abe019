"""Before a run: every missing prerequisite is listed at once (data, reference statistics, Inception and DINOv2
weights), each with where to get it; one problem stays one line."""
import subprocess
import sys

import pytest

from harness.evaluation import features
from harness.recipe.load import load_recipe
from harness.recipe.planner import plan_jobs
from harness.run import preflight as checks
from helpers import ROOT, tiny_recipe

EVALUATION = {"samples_per_class": 8, "features": "inception", "fd_dinov2": True}


def test_every_missing_prerequisite_is_listed_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no DINOv2 in this hub
    monkeypatch.setattr(checks, "check_inception", lambda: features.check_inception(tmp_path / "inception.pt"))
    path = tiny_recipe(tmp_path, evaluation={**EVALUATION, "reference": str(tmp_path / "img.npz")})
    with pytest.raises(checks.Missing) as missing:
        checks.preflight(plan_jobs(load_recipe(path), tmp_path / "runs"))
    problems = missing.value.problems
    assert len(problems) == 3, problems  # each once, though three evaluations need them
    assert any("Inception weights" in p for p in problems) and any("DINOv2" in p for p in problems)
    assert any("img.npz not found" in p for p in problems)
    assert str(missing.value).startswith("3 problems, all listed:")


def test_a_missing_data_set_is_listed_with_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = tiny_recipe(tmp_path, data={"name": "folder", "path": str(tmp_path / "nowhere")},
                       evaluation={"samples_per_class": 8, "fd_dinov2": True})
    with pytest.raises(checks.Missing) as missing:
        checks.preflight(plan_jobs(load_recipe(path), tmp_path / "runs"))
    assert [p.split(" ")[0] for p in missing.value.problems] == ["data", "DINOv2"]


def test_the_command_prints_them_all_and_writes_nothing(tmp_path):
    path = tiny_recipe(tmp_path, data={"name": "folder", "path": str(tmp_path / "nowhere")},
                       evaluation={"samples_per_class": 8, "fd_dinov2": True})
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--runs-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=ROOT, env={"TORCH_HOME": str(tmp_path / "t"),
                                                                         "PATH": "/usr/bin:/bin"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[0].endswith("2 problems, all listed:"), done.stderr
    assert lines[1].startswith("  - data folder") and lines[2].startswith("  - DINOv2")
    assert not (tmp_path / "r").exists()

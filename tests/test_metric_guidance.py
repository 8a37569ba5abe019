"""Guidance per metric (sCM Table 6 reports FID and FD_DINOv2 at different scales) and the report's pairing with the
paper: a row meets a paper row only where method, size, metric, NFE and guidance all match."""
import numpy as np
import pandas as pd
import pytest

from harness.recipe.text import RecipeError
from harness.report.tables import with_paper
from harness.run.evaluate import evaluate
from harness.run.train import train_stage
from helpers import evaluation_of, stage_job, tiny_recipe

PER_METRIC = "{sampler: dpm-solver-2s, steps: 4, guidance: {fid: [1.0], class_accuracy: [2.0]}}"


def test_the_sampling_block_takes_guidance_per_metric(tmp_path):
    job = evaluation_of(tiny_recipe(tmp_path), tmp_path / "runs", "teacher", [f"stages.teacher.sampling={PER_METRIC}"])
    assert job.sampling.guidance == [1.0, 2.0]  # every scale named is sampled
    assert job.sampling.metric_guidance == {"fid": [1.0], "class_accuracy": [2.0]}
    assert job.sampling.reports("fid", 1.0) and not job.sampling.reports("fid", 2.0)
    assert job.sampling.reports("kid", 1.0) and not job.sampling.reports("kid", 2.0)  # unnamed metrics follow fid
    assert job.sampling.reports("class_accuracy", 2.0) and not job.sampling.reports("class_accuracy", 1.0)
    plain = evaluation_of(tiny_recipe(tmp_path / "b"), tmp_path / "b" / "runs", "teacher")
    assert plain.sampling.metric_guidance == {} and plain.sampling.reports("fid", 7.0)
    assert "metric_guidance" not in plain.sampling.model_dump(exclude_defaults=True)  # ids of old jobs unchanged


@pytest.mark.parametrize("sampling, message", [
    ("{sampler: dpm-solver-2s, steps: 4, guidance: {fdd: [2.0]}}", "stages.teacher.sampling.guidance: no metric 'fdd'"),
    ("{sampler: dpm-solver-2s, steps: 4, guidance: {fid: [high]}}", "stages.teacher.sampling"),
])
def test_bad_guidance_per_metric_is_named(tmp_path, sampling, message):
    with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
        evaluation_of(tiny_recipe(tmp_path), tmp_path / "runs", "teacher", [f"stages.teacher.sampling={sampling}"])


def test_each_metric_is_reported_at_its_own_scales(tmp_path):
    path, runs = tiny_recipe(tmp_path), tmp_path / "runs"
    overrides = [f"stages.teacher.sampling={PER_METRIC}"]
    train_stage(stage_job(path, runs, "teacher", overrides), threads=1)
    rows = evaluate(evaluation_of(path, runs, "teacher", overrides), threads=1)
    at = {(r["metric"], r["guidance"]) for r in rows}
    assert {("fid", 1.0), ("kid", 1.0), ("class_accuracy", 2.0)} <= at
    assert not {("fid", 2.0), ("kid", 2.0), ("class_accuracy", 1.0)} & at


def _ours(**row) -> pd.DataFrame:
    return pd.DataFrame([{"method": "scd", "size": "S", "metric": "fid", "nfe": 1, "guidance": 1.0, "mean": 3.0,
                          **row}])


PAPER = pd.DataFrame([
    {"method": "sCD", "size": "S", "metric": "fd_dinov2", "nfe": 1, "guidance": 2.0, "value": 100.0, "params_m": 1},
    {"method": "sCD", "size": "S", "metric": "fid", "nfe": 1, "guidance": 1.5, "value": 3.07, "params_m": 1},
    {"method": "sCD", "size": "S", "metric": "fid", "nfe": 2, "guidance": np.nan, "value": 2.5, "params_m": 1},
    {"method": "TrigFlow teacher", "size": "S", "metric": "fid", "nfe": 126, "guidance": 1.4, "value": 2.29,
     "params_m": 1},
])


@pytest.mark.parametrize("row, paper", [
    (dict(metric="fd_dinov2", guidance=2.0), 100.0),  # metric, NFE and scale match
    (dict(metric="fd_dinov2", guidance=1.5), None),  # FD_DINOv2 at FID's scale: the paper has none
    (dict(guidance=1.5), 3.07),
    (dict(guidance=1.4), None),
    (dict(nfe=2, guidance=1.0), 2.5),  # a paper row without a scale is unguided
    (dict(nfe=2, guidance=1.3), None),
    (dict(method="diffusion", nfe=126, guidance=1.4), 2.29),
    (dict(method="diffusion", nfe=63, guidance=1.4), None),  # a teacher at another NFE, too
])
def test_a_row_meets_a_paper_row_only_where_everything_matches(row, paper):
    value = with_paper(_ours(**row), PAPER).paper.iloc[0]
    assert (pd.isna(value) if paper is None else value == paper)

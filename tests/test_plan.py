"""`scm-bench plan`: measured network costs, the stage arithmetic, the sbatch preview, and the command itself."""
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn
from typer.testing import CliRunner

from harness.compute import training_network
from harness.recipe.load import load_recipe
from harness.recipe.planner import evaluation_resources, plan_jobs
from harness.recipe.sections import ResourcesConfig
from harness.tools import cost as plan_cost
from harness.tools import plan

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "recipes" / "digits.yaml"
EDM2_DEFAULTS = ["network.name=unet-edm2", "network.channels=null", "network.channel_mult=null",
                 "network.blocks_per_level=null", "network.attn_resolutions=null"]  # digits.yaml sets toy values

pytestmark = pytest.mark.usefixtures("single_thread")


def digits(*overrides):
    return load_recipe(DIGITS, list(overrides))


def job(recipe, stage="teacher"):
    """The training job of a stage of a recipe without a sweep."""
    return next(j for j in plan_jobs(recipe, Path("runs")).train if j.stage == stage)


# ---- network_cost ----------------------------------------------------------------------------------------------

def test_mlp_flops_are_twice_the_multiply_adds_of_its_linear_layers():
    recipe = digits("network.name=mlp", "network.channels=8", "network.blocks_per_level=2",
                    "network.channel_mult=null", "network.attn_resolutions=null",
                    "data.name=synthetic", "data.shape=[1,2,2]", "data.num_classes=3")
    cost = plan_cost.network_cost(job(recipe))
    D, H, L, C = 4, 8, 2, 3  # data dim, hidden, depth, classes
    # input D->H, time MLP 2 x H->H, label C->H, L residual H->H, output H->D; the time embedding has no matmul
    hand = 2 * (D * H + 2 * H * H + C * H + L * H * H + H * D)
    linears = [m for m in training_network(job(recipe), (1, 2, 2), 3).modules() if isinstance(m, nn.Linear)]
    assert hand == 2 * sum(m.in_features * m.out_features for m in linears)
    assert cost["forward_flops"] == hand
    assert cost["params"] == sum(p.numel() for m in linears for p in m.parameters())


def test_edm2_s_on_latents_matches_the_paper_and_counts_attention():
    recipe = digits(*EDM2_DEFAULTS, "network.size=S", "data.name=imagenet512-latents")
    cost = plan_cost.network_cost(job(recipe))
    # EDM2 (Karras et al. 2024, Table 2): EDM2-S costs 102 GMACs at 512 (4x64x64 latents); 1 MAC = 2 FLOPs
    assert cost["forward_flops"] == pytest.approx(2 * 102e9, rel=0.15)
    assert cost["device"] == "meta"
    # attention is counted: 4 L^2 C per block (q k^T and p v), 7 blocks at 16x16 (C = 576) and 8 at 8x8 (C = 768)
    attention = 4 * (7 * 256 ** 2 * 576 + 8 * 64 ** 2 * 768)
    assert cost["flops_by_op"]["aten.bmm"] == attention


def test_saved_activations_grow_with_image_area():
    def per_sample(size):
        recipe = digits("network.attn_resolutions=[]", "data.name=synthetic", f"data.shape=[1,{size},{size}]",
                        "data.num_classes=10")
        return plan_cost.network_cost(job(recipe))["saved_bytes_per_sample"]

    small, large = per_sample(8), per_sample(16)
    assert 0 < small < large < float("inf")
    assert 3.5 < large / small <= 4.0  # per pixel, plus a little per sample (embeddings, norm statistics)


def test_costs_are_cached_per_network_and_shape(monkeypatch):
    calls = []
    measure = plan_cost._measure
    monkeypatch.setattr(plan_cost, "_COST_CACHE", {})
    monkeypatch.setattr(plan_cost, "_measure", lambda *args: calls.append(args) or measure(*args))
    recipe = digits("sweep={seed: [0, 1, 2]}")
    rows = plan.plan_rows(plan_jobs(recipe, Path("runs")))
    assert len(rows) == 2 * 9 and len(calls) == 1  # every job of every seed: one network, no dropout


# ---- stage_estimate --------------------------------------------------------------------------------------------

def test_stage_estimate_arithmetic():
    recipe = digits("resources.nodes=2", "resources.tasks_per_node=2", "stages.scd.guidance=2.0")
    flops = plan_cost.network_cost(job(recipe))["forward_flops"]
    for name, multiplier in (("teacher", 3), ("sct", 5), ("scd", 7)):  # sCD with CFG: two teacher forwards
        stage, estimate = recipe.stages[name], plan_cost.stage_estimate(job(recipe, name), tflops_per_gpu=100.0)
        expected = stage.steps * stage.batch_size * flops * multiplier / (100.0 * 1e12 * 3600)
        assert estimate["multiplier"] == multiplier
        assert estimate["gpu_hours"] == pytest.approx(expected, rel=1e-12)
        assert estimate["wall_hours"] == pytest.approx(expected / 4, rel=1e-12)
        assert (estimate["ranks"], estimate["per_rank_batch"], estimate["passes"]) == (4, 32, 1)
        assert estimate["fits"] is None  # no GPUs: nothing to fit
    assert plan_cost.stage_estimate(job(digits(), "scd"))["multiplier"] == 6  # guidance 1: one teacher forward
    discrete = digits("stages.sct.method=discrete-ct", "stages.sct.discrete_steps=16", "stages.sct.tangent=null")
    assert plan_cost.stage_estimate(job(discrete, "sct"))["multiplier"] == 4  # the target's forward + training


def test_memory_shrinks_with_micro_batch_and_the_fix_is_a_divisor():
    gpu = job(digits("resources.gpus_per_node=1"))
    cost = plan_cost.network_cost(gpu)
    limit = plan_cost.memory_gb(cost, gpu, 10)  # room for 10 samples a pass; 128 do not fit
    recipe = digits("resources.gpus_per_node=1", f"resources.gpu_memory_gb={limit}")
    full = plan_cost.stage_estimate(job(recipe))
    assert full["fits"] is False and full["passes"] == 1
    fitting = full["largest_fitting_micro_batch"]
    assert fitting == 8 and 128 % fitting == 0
    assert plan_cost.memory_gb(cost, gpu, 8) <= limit < plan_cost.memory_gb(cost, gpu, 16)
    smaller = plan_cost.stage_estimate(job(digits("resources.gpus_per_node=1", "stages.teacher.micro_batch=8",
                                                  f"resources.gpu_memory_gb={limit}")))
    assert smaller["memory_gb"] < full["memory_gb"] and smaller["fits"] is True and smaller["passes"] == 16
    half = plan_cost.stage_estimate(job(digits("stages.teacher.precision=bf16")))
    per_sample = cost["saved_bytes_per_sample"] * 128 / plan_cost.GB
    assert full["activations_gb"] - half["activations_gb"] == pytest.approx(per_sample / 2)
    # sCD: five fp32 copies of its network (weights, gradients, Adam's two moments, EMA) and the teacher's weights
    assert plan_cost.stage_estimate(job(digits(), "scd"))["weights_gb"] == pytest.approx(
        cost["params"] * 24 / plan_cost.GB)


def test_a_job_the_store_holds_costs_nothing_and_says_who_made_it(tmp_path):
    """The teacher of digits.yaml trained by another recipe (findings_nfe shares it): 0 GPU-hours, reused."""
    from harness import store

    recipe = digits()
    teacher = next(j for j in plan_jobs(recipe, tmp_path / "runs").train if j.stage == "teacher")
    nfe = load_recipe(ROOT / "recipes" / "findings_nfe.yaml")
    assert teacher.id in {j.id for j in plan_jobs(nfe, tmp_path / "runs").train}  # one job for both recipes
    teacher.final_checkpoint.parent.mkdir(parents=True)
    teacher.final_checkpoint.write_bytes(b"weights")
    store.write_json(teacher.path / "job.json", {"recipe": "findings_nfe", "stage": "teacher"})
    rows = plan.plan_rows(plan_jobs(recipe, tmp_path / "runs"))
    reused = [row for row in rows if row["reused"]]
    assert [(row["kind"], row["label"], row["reused"]) for row in reused] == [
        ("train", "teacher", "findings_nfe/teacher")]
    assert reused[0]["gpu_hours"] == 0.0 and all(row["gpu_hours"] > 0 for row in rows if not row["reused"])


# ---- sbatch_preview ----------------------------------------------------------------------------------------------

GPU_RESOURCES = ResourcesConfig(nodes=2, gpus_per_node=8, partition="gpu", time_min=120, mem_gb=200)


@pytest.mark.parametrize("slurm_installed", [True, False])
def test_sbatch_preview_with_and_without_slurm(tmp_path, monkeypatch, slurm_installed):
    if not slurm_installed:
        monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    text = plan.sbatch_preview(GPU_RESOURCES, "scm-train", "runs/x/logs")
    lines = text.splitlines()
    assert all(line.startswith("#SBATCH --") for line in lines)
    for flag in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu", "--time=120",
                 "--mem=200GB", "--job-name=scm-train"):
        assert f"#SBATCH {flag}" in lines
    assert "--output=runs/x/logs/" in text and "/tmp" not in text
    cpu = plan.sbatch_preview(ResourcesConfig(), "scm-train")
    assert "--gpus-per-node" not in cpu and "--partition" not in cpu and "#SBATCH --time=60" in cpu


def test_sbatch_preview_falls_back_when_submitit_changes(monkeypatch):
    from_submitit = set(plan.sbatch_preview(GPU_RESOURCES, "scm-train").splitlines())

    def changed(*args):
        raise AttributeError("no _make_submission_file_text")

    monkeypatch.setattr(plan, "_submitit_sbatch_text", changed)
    by_hand = plan.sbatch_preview(GPU_RESOURCES, "scm-train").splitlines()
    assert by_hand and set(by_hand) <= from_submitit


# ---- plan_command ------------------------------------------------------------------------------------------------

@pytest.fixture
def cli():
    from harness.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["plan", *map(str, args)])


def test_plan_command_prints_and_writes_nothing(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    result = cli(DIGITS, "--executor", "slurm", "--set", "resources.gpus_per_node=1", "--tflops", "100",
                 "--set", "resources.gpu_memory_gb=0.001")
    assert result.exit_code == 0, result.output
    assert "digits: 3 training jobs, 3 evaluations" in result.stdout and "100 TFLOP/s" in result.stdout
    assert "warning: teacher: " in result.stdout and "even micro_batch 1 does not fit" in result.stdout
    assert "GPU-hours: train diffusion" in result.stdout and "#SBATCH --gpus-per-node=1" in result.stdout
    assert list(tmp_path.iterdir()) == []  # no runs/, no logs


def test_plan_command_local_recipe(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    result = cli(DIGITS)
    assert result.exit_code == 0, result.output
    assert "executor local" in result.stdout and "#SBATCH --" not in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_plan_command_missing_recipe(tmp_path, cli):
    result = cli(tmp_path / "missing.yaml")
    assert result.exit_code == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and "not found" in errors[0]


def test_plan_help_does_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from harness.cli import app; "
            "assert CliRunner().invoke(app, ['plan', '--help']).exit_code == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_plan_reads_in_100_columns_with_ids_keys_and_arrays_in_full(tmp_path, monkeypatch, cli):
    """The terminal layout: what each sweep entry sets (full dotted keys and values), every job id in full,
    generation arrays counted and previewed, and no line wider than 100 columns; --details keeps the wide table."""
    monkeypatch.chdir(tmp_path)
    result = cli(ROOT / "recipes" / "table2_scd.yaml", "--executor", "slurm")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert max(map(len, out.splitlines())) <= 100
    assert "fd_dinov2: [1.9, 2.0]}" in out
    assert "stages.teacher.ema.sigma_rel=0.025" in out
    plan = plan_jobs(load_recipe(ROOT / "recipes" / "table2_scd.yaml"), tmp_path / "runs")
    assert all(job.id in out for job in plan.train) and all(job.id in out for job in plan.evaluate)
    assert "10 training jobs, 10 evaluations, 10 generation arrays" in out
    assert "# generate diffusion, scd (10 array(s) of 8 tasks" in out
    wide = cli(ROOT / "recipes" / "table2_scd.yaml", "--details", "--no-sbatch")
    assert wide.exit_code == 0 and "GFLOPs/fwd" in wide.stdout


def test_an_evaluation_asks_for_its_share_of_the_training_node_memory():
    train = ResourcesConfig(nodes=4, gpus_per_node=8, mem_gb=480)
    assert evaluation_resources(train, 1).mem_gb == 60 and evaluation_resources(train, 8).mem_gb == 480
    assert evaluation_resources(ResourcesConfig(tasks_per_node=2, mem_gb=16), 1).mem_gb == 8
    assert evaluation_resources(ResourcesConfig(), 1).mem_gb is None

"""Training-loop options that EDM2 and FastGen users expect: global gradient-norm clipping and per-stage dropout
resolution (the teachers drop out in every block, the consistency models only at resolution <= 16)."""
import pytest
import torch

from harness.compute.networks import training_network
from harness.recipe.text import RecipeError
from harness.run.train import build_training, clip_gradients, train_stage
from helpers import stage_job, tiny_recipe
from scm.nets.unet import Block

TINY_EDM2 = {"name": "unet-edm2", "channels": 16, "channel_mult": [1, 2], "blocks_per_level": 1,
             "attn_resolutions": [4]}


def test_clipping_scales_the_global_gradient_norm_and_keeps_its_direction(tmp_path):
    job = stage_job(tiny_recipe(tmp_path), tmp_path / "runs", "teacher", ["stages.teacher.grad_clip=0.5"])
    _, _, state = build_training(job)
    params = state.parameters()
    generator = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    before = [p.grad.clone() for p in params]
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in before]).double()))
    assert clip_gradients(state, 0.5) == pytest.approx(norm, rel=1e-5)
    after = torch.cat([p.grad.flatten() for p in params])
    assert float(torch.linalg.vector_norm(after)) == pytest.approx(0.5, rel=1e-5)
    torch.testing.assert_close(after, torch.cat([g.flatten() for g in before]) * (0.5 / norm), rtol=1e-5, atol=1e-9)
    small = [p.grad.clone() for p in params]
    clip_gradients(state, 10.0)  # below the limit: unchanged
    assert all(torch.equal(a, p.grad) for a, p in zip(small, params))


def test_a_clipped_stage_trains_and_logs_the_norm_before_clipping(tmp_path):
    path = tiny_recipe(tmp_path)
    overrides = ["stages.teacher.steps=3", "stages.teacher.batch_size=8"]
    plain = torch.load(train_stage(stage_job(path, tmp_path / "a", "teacher", overrides), threads=1),
                       weights_only=True)
    clipped = torch.load(train_stage(stage_job(path, tmp_path / "b", "teacher", overrides +
                                               ["stages.teacher.grad_clip=1e-4"]), threads=1), weights_only=True)
    assert all(h["grad_norm"] > 1e-4 for h in clipped["history"]) and "grad_norm" not in plain["history"][0]
    changed = [k for k in plain["networks"]["net"] if not torch.equal(plain["networks"]["net"][k],
                                                                       clipped["networks"]["net"][k])]
    assert changed  # the clip took effect


def _rates(net) -> dict[str, float]:
    return {name: m.dropout for name, m in net.named_modules() if isinstance(m, Block)}


def test_dropout_resolution_is_a_stage_setting(tmp_path):
    path = tiny_recipe(tmp_path, network=TINY_EDM2)
    overrides = ["stages.teacher.dropout=0.1", "stages.sct.dropout=0.3", "stages.sct.dropout_max_resolution=4"]
    teacher = training_network(stage_job(path, tmp_path / "runs", "teacher", overrides), (1, 8, 8), 10)
    student = training_network(stage_job(path, tmp_path / "runs", "sct", overrides), (1, 8, 8), 10)
    assert set(_rates(teacher).values()) == {0.1}  # every block (EDM2 config G)
    assert {rate for name, rate in _rates(student).items() if name.split(".")[1].startswith("4x4")} == {0.3}
    assert {rate for name, rate in _rates(student).items() if name.split(".")[1].startswith("8x8")} == {0.0}


def test_dropout_resolution_in_the_network_section_says_where_it_went(tmp_path):
    with pytest.raises(RecipeError, match="stages.NAME.dropout_max_resolution"):
        stage_job(tiny_recipe(tmp_path, network={**TINY_EDM2, "dropout_max_resolution": 16}), tmp_path / "r", "sct")
    with pytest.raises(RecipeError, match="applies to unet-edm2 and ddpmpp, not toy-unet"):
        stage_job(tiny_recipe(tmp_path), tmp_path / "r", "sct", ["stages.sct.dropout_max_resolution=4"])

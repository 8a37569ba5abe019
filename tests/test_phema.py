"""Several EMA lengths at once and EDM2's post-hoc EMA (scm/phema.py, harness/compute/posthoc.py): the profile
mathematics alone; on a short real training run, the reconstruction against EMAs tracked directly with the same
sigma_rel (and a wrong length, which must miss by far); snapshots and tracked EMAs after a resume, bitwise; an
evaluation swept over sigma_rel and its report; `scm-bench phema`."""

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from conftest import F64
from harness import store
from harness.cli import app
from harness.compute import read_network
from harness.compute.posthoc import reconstruct, snapshot_path, snapshot_steps
from harness.recipe.jobs import Checkpoint
from harness.recipe.manifest import write_manifest
from harness.report.report import report_from_rows
from harness.report.rows import rows_frame
from harness.run.evaluate import evaluate
from harness.run.train import train_stage
from helpers import planned, stage_job, tiny_recipe
from scm.ema import PowerEMA, sigma_rel_to_gamma
from scm.phema import PowerProfile, blend, post_hoc_coefficients, profile_fit_error

STEPS, SNAPSHOT_EVERY = 300, 20
POST_HOC = {"sigma_rel": [0.05, 0.10], "snapshot_every": SNAPSHOT_EVERY}  # EDM2's two lengths
TRACKED = [0.08, 0.15]  # tracked directly, to check the reconstruction against


# ---- the mathematics alone ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ga,ta,gb,tb", [(16.97, 300, 6.94, 120), (6.94, 40, 16.97, 300), (0.5, 7, 2.0, 7),
                                         (25.0, 1000, 25.0, 999)])
def test_inner_products_match_quadrature(ga, ta, gb, tb):
    """<p_a, p_b> in closed form against the integral of the two profiles' product, by the trapezoid rule on 2M
    points (its error ~ h^2 f'' is below 1e-9 relative here)."""
    tau = np.linspace(0.0, min(ta, tb), 2_000_001)
    product = (ga + 1) * tau ** ga / ta ** (ga + 1) * (gb + 1) * tau ** gb / tb ** (gb + 1)
    numeric = float(np.sum((product[1:] + product[:-1]) / 2 * np.diff(tau)))
    closed = PowerProfile(ga, ta).dot(PowerProfile(gb, tb))
    assert closed == pytest.approx(numeric, rel=1e-7)
    assert closed == PowerProfile(gb, tb).dot(PowerProfile(ga, ta))


def test_a_snapshot_is_reconstructed_by_itself():
    """A target equal to one of the snapshots: that snapshot's coefficient 1, the others 0, a perfect fit."""
    snapshots = [PowerProfile(sigma_rel_to_gamma(s), t) for t in (100, 200, 300) for s in (0.05, 0.10)]
    for j, target in enumerate(snapshots):
        x = post_hoc_coefficients(snapshots, target)
        # 6 profiles: A's condition number is ~80, so lstsq is exact to ~1e-14; 1e-8
        np.testing.assert_allclose(x, np.eye(len(snapshots))[j], atol=1e-8)
        assert profile_fit_error(snapshots, target, x) < 1e-6


def test_the_power_ema_averages_with_the_profile():
    """PowerEMA's weight on step k's weights is p integrated over (k-1, k]: (k^(g+1) - (k-1)^(g+1)) / T^(g+1),
    which is what makes the closed-form inner products those of the EMAs the harness keeps."""
    T, gamma = 60, sigma_rel_to_gamma(0.10)
    net = nn.Linear(T, 1, bias=False).double()
    ema = PowerEMA(net, 0.10)
    for k in range(1, T + 1):
        with torch.no_grad():
            net.weight.copy_(torch.eye(T, dtype=F64)[k - 1])  # step k's weights: the k-th unit vector
        ema.update(net, k)
    k = np.arange(1, T + 1)
    expected = (k ** (gamma + 1) - (k - 1) ** (gamma + 1)) / T ** (gamma + 1)
    np.testing.assert_allclose(ema.ema.weight.detach().numpy()[0], expected, rtol=1e-10, atol=1e-14)


def test_reconstruction_of_a_synthetic_trajectory_and_blend():
    """float64 weights along a smooth path: EMAs of 0.05 and 0.10 snapshotted every 10 steps rebuild the EMA of
    0.08 that was tracked beside them; `blend` keeps each entry's dtype."""
    T, every = 200, 10
    steps = torch.arange(1, T + 1, dtype=F64)[:, None]
    path = torch.cat([torch.sin(0.03 * steps), 0.01 * steps, torch.cos(0.011 * steps) + 1e-4 * steps ** 1.5], 1)
    net = nn.Linear(3, 1, bias=False).double()
    emas = {s: PowerEMA(net, s) for s in (0.05, 0.10, 0.08)}
    snapshots, profiles = [], []
    for step in range(1, T + 1):
        with torch.no_grad():
            net.weight.copy_(path[step - 1])
        for ema in emas.values():
            ema.update(net, step)
        if step % every == 0:
            for s in (0.05, 0.10):
                snapshots.append({"weight": emas[s].ema.weight.detach().clone()})
                profiles.append(PowerProfile(sigma_rel_to_gamma(s), step))
    x = post_hoc_coefficients(profiles, PowerProfile(sigma_rel_to_gamma(0.08), T))
    rebuilt = blend(iter(snapshots), x)["weight"]
    tracked = emas[0.08].ema.weight.detach()
    error = float((rebuilt - tracked).norm() / (tracked - path[-1]).norm())
    assert error < 0.01, error  # the EMA sits ~1e2 of this error away from the raw weights
    half = blend([{"w": torch.ones(2, dtype=torch.float16)}] * 2, [0.25, 0.25])["w"]
    assert half.dtype == torch.float16 and torch.equal(half, torch.full((2,), 0.5, dtype=torch.float16))
    with pytest.raises(ValueError, match="one snapshot per coefficient"):
        blend([{"w": torch.ones(1)}], [0.5, 0.5])


# ---- on a real training run -----------------------------------------------------------------------------------------

def _recipe(tmp_path, steps=STEPS, checkpoint_every=STEPS, ema=None, evaluate=()):
    """The digits teacher alone as a small MLP, `steps` steps at batch 16, with this `ema:` block."""
    path = tiny_recipe(tmp_path, name="phema")
    raw = yaml.safe_load(path.read_text())
    teacher = raw["stages"]["teacher"]
    teacher.update(steps=steps, checkpoint_every=checkpoint_every, batch_size=16,
                   ema=ema or {"kind": "power", "sigma_rel": 0.05, "also_sigma_rel": TRACKED, "post_hoc": POST_HOC,
                               **({"evaluate_sigma_rel": list(evaluate)} if evaluate else {})})
    teacher["optimizer"]["rampup_steps"] = 0
    raw.update(stages={"teacher": teacher}, network={"name": "mlp", "channels": 64, "blocks_per_level": 2})
    raw["evaluation"].update(samples_per_class=4)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _flat(weights: dict) -> torch.Tensor:
    return torch.cat([v.flatten().double() for _, v in sorted(weights.items()) if v.is_floating_point()])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The teacher trained 300 steps: post-hoc snapshots of 0.05 and 0.10 every 20 steps, 0.08 and 0.15 tracked."""
    tmp = tmp_path_factory.mktemp("phema")
    path = _recipe(tmp)
    job = stage_job(path, tmp / "runs", "teacher")
    train_stage(job, threads=1)
    return tmp, path, job, store.load_checkpoint(job.final_checkpoint)


def test_post_hoc_ema_matches_directly_tracked_emas(trained):
    """Reconstructed from the snapshots, the EMAs of 0.08 and 0.15 are those tracked directly: their difference is
    a small fraction of the EMA's distance from the raw weights. A wrong length (the target's gamma off by a
    fifth of sigma_rel) misses by far more, so the check would fail for a wrong reconstruction."""
    _, _, job, state = trained
    raw = _flat(state["networks"]["net"])
    assert snapshot_steps(job) == list(range(SNAPSHOT_EVERY, STEPS + 1, SNAPSHOT_EVERY))
    for sigma_rel, wrong in ((0.08, 0.065), (0.15, 0.12)):
        tracked = _flat(state["tracked_ema"][f"{sigma_rel:g}"])

        def error(length):
            return float((_flat(reconstruct(job, length).weights) - tracked).norm() / (tracked - raw).norm())

        right, off = error(sigma_rel), error(wrong)
        print(f"\nsigma_rel {sigma_rel}: |rebuilt - tracked| / |tracked - raw| = {right:.2e} "
              f"(|rebuilt - tracked| / |tracked| = {right * float((tracked - raw).norm() / tracked.norm()):.1e}); "
              f"rebuilt as {wrong} (gamma {sigma_rel_to_gamma(wrong):.2f}, not {sigma_rel_to_gamma(sigma_rel):.2f}): "
              f"{off:.2e}")
        assert right < 0.02 and off > 10 * right
    # the sampled EMA (0.05) is one of the snapshots at the last step: rebuilt exactly, up to float32 rounding
    sampled = _flat(state["ema"]["net"])
    assert float((_flat(reconstruct(job, 0.05).weights) - sampled).norm() / sampled.norm()) < 1e-6


def test_tracking_more_emas_changes_nothing_else(tmp_path):
    """The network, its optimizer and the sampled EMA train bitwise as without the extra EMAs and snapshots."""
    plain = _recipe(tmp_path / "plain", steps=40, ema={"kind": "power", "sigma_rel": 0.05})
    more = _recipe(tmp_path / "more", steps=40)
    states = [torch.load(train_stage(stage_job(path, path.parent / "runs", "teacher"), threads=1),
                         weights_only=True) for path in (plain, more)]
    for key in ("networks", "ema"):
        assert all(torch.equal(states[0][key]["net"][k], states[1][key]["net"][k]) for k in states[0][key]["net"])
    assert "tracked_ema" not in states[0] and set(states[1]["tracked_ema"]) == {"0.08", "0.15", "0.1"}


def test_a_resumed_run_writes_the_same_snapshots(trained, tmp_path):
    """Stopped after its step-100 checkpoint (later checkpoints and snapshots lost) and resumed, a run keeps its
    earlier snapshot files untouched and writes the later ones bitwise as the uninterrupted run did; its tracked
    EMAs end equal too."""
    _, _, whole, final = trained
    cut = stage_job(_recipe(tmp_path, checkpoint_every=100), tmp_path / "runs", "teacher")
    train_stage(cut, threads=1)
    for step in (200, 300):
        store.checkpoint_path(cut.path, step).unlink()
    later = [s for s in snapshot_steps(cut) if s > 100]
    for step in later:
        snapshot_path(cut.path, step).unlink()
    kept = {s: snapshot_path(cut.path, s).stat().st_mtime_ns for s in snapshot_steps(cut) if s <= 100}
    resumed = torch.load(train_stage(cut, threads=1), weights_only=True)
    assert all(snapshot_path(cut.path, s).stat().st_mtime_ns == mtime for s, mtime in kept.items())
    for step in snapshot_steps(cut):
        assert snapshot_path(cut.path, step).read_bytes() == snapshot_path(whole.path, step).read_bytes(), step
    for key in final["tracked_ema"]:
        assert all(torch.equal(final["tracked_ema"][key][k], resumed["tracked_ema"][key][k])
                   for k in final["tracked_ema"][key])


def test_evaluation_sweeps_sigma_rel_and_the_report_plots_it(trained, tmp_path):
    """evaluate_sigma_rel: the sampled EMA (0.05), a tracked one (0.08) and a reconstructed one (0.12), each a
    row set with its sigma_rel; the training job is the same one (only the evaluation's id changes); the report's
    table has a row per length and FID against sigma_rel is drawn."""
    tmp, path, job, _ = trained
    swept = _recipe(tmp_path, evaluate=[0.05, 0.08, 0.12])
    evaluation = next(e for e in planned(swept, tmp / "runs").evaluate)
    plain = next(e for e in planned(path, tmp / "runs").evaluate)
    assert evaluation.train.id == job.id and evaluation.id != plain.id and plain.sigma_rel_sweep == []
    rows = evaluate(evaluation, threads=1)
    fid = {row["sigma_rel"]: row for row in rows if row["metric"] == "fid"}
    assert sorted(fid) == [0.05, 0.08, 0.12]
    assert (fid[0.05]["ema"], fid[0.08]["ema"], fid[0.12]["ema"]) == (
        "power sigma_rel=0.05", "power sigma_rel=0.08", "power sigma_rel=0.12 (post-hoc)")
    assert [fid[s].get("ema_sweep", False) for s in (0.05, 0.08, 0.12)] == [False, True, True]
    assert len({fid[s]["value"] for s in fid}) == 3  # three different networks sampled
    table = report_from_rows(rows_frame(rows).assign(source="ours"), "phema", tmp_path / "results")
    assert list(table.sigma_rel) == ["0.05", "0.08", "0.12"]
    out = tmp_path / "results" / "phema"
    assert (out / "fid_vs_sigma_rel.png").is_file() and (out / "fid_vs_sigma_rel.pdf").is_file()
    assert "EMA sigma_rel" in (out / "table.md").read_text()
    # rows without the sweep (the same row, as an evaluation without it writes it): the table of before, no figure
    unswept = [{k: v for k, v in row.items() if k != "sigma_rel"} for row in rows if "ema_sweep" not in row]
    table = report_from_rows(rows_frame(unswept).assign(source="ours"), "plain", tmp_path / "results")
    assert "sigma_rel" not in table and "ema_sweep" not in table
    assert not (tmp_path / "results" / "plain" / "fid_vs_sigma_rel.png").exists()


def test_cli_phema_writes_a_checkpoint_the_harness_samples(trained, tmp_path):
    """`scm-bench phema RECIPE --stage teacher --sigma-rel 0.12` saves the reconstruction as a checkpoint that
    read_network loads; bad input is one line."""
    tmp, path, job, _ = trained
    runs = tmp / "runs"
    write_manifest(runs, path, planned(path, runs), [], False, "local")
    out = tmp_path / "ema-0.12.pt"
    runner = CliRunner()
    done = runner.invoke(app, ["phema", str(path), "--stage", "teacher", "--sigma-rel", "0.12", "--out", str(out),
                               "--runs-dir", str(runs)])
    assert done.exit_code == 0, done.output
    assert "sigma_rel=0.12 at step 300 from 30 snapshots" in done.output
    saved = store.load_checkpoint(out)
    expected = reconstruct(job, 0.12).weights
    assert all(torch.equal(saved["ema"]["net"][k], expected[k]) for k in expected)
    data_shape, classes = (1, 8, 8), 10
    net = read_network(Checkpoint(checkpoint=str(out), stamp="test"), job, data_shape, classes)
    assert torch.equal(net.state_dict()[next(iter(expected))].cpu(), expected[next(iter(expected))])
    for args, needle in ((["--sigma-rel", "0.4"], "out of range"), (["--stage", "nope"], "no such stage")):
        argv = ["phema", str(path), "--stage", "teacher", "--sigma-rel", "0.1", "--runs-dir", str(runs)]
        argv[argv.index(args[0]) + 1] = args[1]
        bad = runner.invoke(app, argv)
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.exit_code == 2 and len(lines) == 1 and needle in lines[0], bad.stderr

"""The measurements behind results/README.md's findings: sCM Fig. 4's terms of df/dt."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from harness.tools.tangent_terms import df_dt_terms
from test_harness import ROOT


def test_the_two_terms_add_up_to_df_dt_by_finite_differences():
    """x-part + t-part = sd sin t dF/dt along the PF-ODE (x_t moving at the model's velocity), float64, for each
    time embedding; and the t-part vanishes for a network that ignores time."""
    from scm.nets import build_network

    torch.manual_seed(0)
    sd = 0.5
    for settings in ({"c_noise": "log-sigma", "time_embedding": "fourier"}, {"time_embedding": "positional"}):
        net = build_network("toy-unet", in_channels=1, resolution=8, num_classes=10, channels=16,
                            **settings).double().eval()
        with torch.no_grad():  # the output layer starts at zero (F = 0): give every weight a random value
            for p in net.parameters():
                p.normal_(0, 0.2)
        x_t, labels = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.tensor([1, 4, 7])
        t = torch.tensor([0.3, 1.0, 1.5], dtype=torch.float64)
        x_part, t_part = df_dt_terms(net, x_t, t, labels, sd)
        with torch.no_grad():
            v = sd * net(x_t / sd, t, labels)
            h = 1e-8  # float64: truncation (Fourier scale 16 has large higher derivatives) and rounding both small
            fd = (net((x_t + h * v) / sd, t + h, labels) - net((x_t - h * v) / sd, t - h, labels)) / (2 * h)
        expected = sd * torch.sin(t).view(-1, 1, 1, 1) * fd
        torch.testing.assert_close(x_part + t_part, expected, rtol=1e-5, atol=1e-7)
        assert t_part.abs().max() > 0
    frozen = lambda x, t, labels: x * 2.0  # noqa: E731 - F ignores t
    _, t_part = df_dt_terms(frozen, x_t, t, labels, sd)
    assert t_part.abs().max() == 0


def test_tangent_terms_of_a_smoke_run_cover_every_formulation(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "harness.cli", *args, "--runs-dir", str(tmp_path / "runs")],
                              capture_output=True, text=True, cwd=ROOT)

    recipe = str(ROOT / "recipes" / "fig4_stability.yaml")
    assert cli("findings", "tangent-terms", recipe, "--smoke").returncode == 2  # nothing trained yet
    assert cli("run", recipe, "--smoke", "--executor", "debug").returncode == 0
    done = cli("findings", "tangent-terms", recipe, "--smoke", "--samples", "4", "--results-dir",
               str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(tmp_path / "results" / "fig4_stability-smoke" / "tangent_terms.csv")
    assert frame.formulation.nunique() == 3 and len(frame) == 3 * 36
    assert np.isfinite(frame[["x_part", "t_part"]].to_numpy()).all() and frame.t.max() < math.pi / 2
    assert (tmp_path / "results" / "fig4_stability-smoke" / "tangent_terms.png").stat().st_size > 10_000


def _random_net(seed=0, **settings):
    from scm.nets import build_network

    torch.manual_seed(seed)
    net = build_network("toy-unet", in_channels=1, resolution=8, num_classes=10, channels=16, **settings).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def test_discrete_consistency_gradient_tends_to_the_continuous_one():
    """With many steps, the discrete-time objective's gradient equals sCT's (no normalization, no warmup) times
    t_max / (N sd sin t cos t), per time t (float64, all samples at one grid time)."""
    from scm import Noise, TangentSettings, consistency_loss, trigflow
    from scm.discrete import discrete_consistency_loss
    from scm.weighting import AdaptiveWeight

    sd, steps = 0.5, 200_000
    dt = trigflow.t_max(sigma_data=sd) / steps
    net, weight = _random_net(), AdaptiveWeight().double()
    x0, labels = torch.randn(4, 1, 8, 8, dtype=torch.float64) * 0.5, torch.tensor([0, 3, 5, 9])
    z = torch.randn(4, 1, 8, 8, dtype=torch.float64) * sd
    for i in (20_000, 90_000, 180_000):
        t = torch.full((4,), i * dt, dtype=torch.float64)
        grads = []
        for loss_of in (
                lambda: discrete_consistency_loss(net, weight, x0, labels, steps, -1.0, 1.4, sd, noise=Noise(t, z))[0],
                lambda: consistency_loss(net, weight, x0, labels, 10 ** 9, -1.0, 1.4,
                                         TangentSettings("none", 0.1, 0, "torch-func"), sigma_data=sd,
                                         noise=Noise(t, z))[0]):
            net.zero_grad()
            loss_of().backward()
            grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
        scale = sd * math.sin(t[0]) * math.cos(t[0]) / dt
        error = (grads[0] * scale - grads[1]).norm() / grads[1].norm()
        assert error < 1e-4, (i, float(error))  # measured 6e-6 .. 1e-5 (the O(dt) remainder)


def test_the_discrete_grid_moves_t_up_to_its_step():
    from scm.discrete import snap_to_grid

    t, t_prev = snap_to_grid(torch.tensor([0.0, 0.001, 0.5, 1.0, 1.57]), 4, 1.6)
    torch.testing.assert_close(t, torch.tensor([0.4, 0.4, 0.8, 1.2, 1.6]))
    torch.testing.assert_close(t_prev, torch.tensor([0.0, 0.0, 0.4, 0.8, 1.2]))


# ---------------------------------------------------------------- Fig. 5 ablations: their switches and curves

def test_without_adaptive_weighting_the_loss_is_the_plain_mse():
    """L = e^w / D ||F - F- - g||^2 - w: a learned constant w = b gives e^b L_uniform - b, so UniformWeight is w = 0."""
    from scm import consistency_loss
    from scm.weighting import AdaptiveWeight, UniformWeight

    net = _random_net(seed=1).double()
    x0, labels = torch.randn(5, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4])
    shifted = AdaptiveWeight().double()
    with torch.no_grad():
        shifted.linear.bias.fill_(0.7)
    losses = [consistency_loss(net, weight, x0, labels, 3, -1.0, 1.4, generator=torch.Generator().manual_seed(5))[0]
              for weight in (UniformWeight(), shifted)]
    assert list(UniformWeight().parameters()) == []
    torch.testing.assert_close(losses[1], math.exp(0.7) * losses[0] - 0.7, rtol=1e-12, atol=1e-12)


def _ablation_recipe(tmp_path, sct_steps: int, during: list[int], sweep: dict | None = None):
    """A teacher and an sCT student of `sct_steps` steps, evaluated during training at `during`; its own name per
    length (two recipes, two runs), one store."""
    import yaml
    from helpers import tiny_recipe

    name = f"tiny{sct_steps}"
    raw = yaml.safe_load(tiny_recipe(tmp_path / name, name).read_text())
    raw["stages"].pop("scd")
    raw["stages"]["sct"].update(steps=sct_steps, checkpoint_every=2, during_training=during)
    raw["sweep"] = sweep or {}
    path = tmp_path / name / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class _Quiet:
    def update(self, name, info):
        pass


def test_fid_over_training_and_student_seeds(tmp_path):
    """A 4-step student evaluated at step 2 (during_training) gives exactly the rows of the same student trained for
    2 steps; students' own seeds share one teacher, seed 0 given explicitly is the default's very job (a job is its
    content), seed 1 differs; the report's tables keep final rows and its curve has every seed's point."""
    from harness.recipe.load import load_recipe
    from harness.recipe.manifest import read_manifest
    from harness.recipe.planner import plan_jobs
    from harness.report.report import write_report
    from harness.run.runner import run_recipe

    runs = tmp_path / "runs"
    seeds = {"seed": [{"label": "default"}, {"label": "1", "stages.sct.seed": 1}, {"label": "2", "stages.sct.seed": 2}]}
    long_path, short_path = _ablation_recipe(tmp_path, 4, [2], seeds), _ablation_recipe(tmp_path, 2, [])
    long = run_recipe(load_recipe(long_path), long_path, runs, "debug", _Quiet())
    short = run_recipe(load_recipe(short_path), short_path, runs, "debug", _Quiet())
    assert len(list((runs / "store").glob("diffusion-*"))) == 1  # one teacher for every student of both recipes
    student = lambda rows, variant, step: {(r["nfe"], r["metric"]): r["value"] for r in rows  # noqa: E731
                                           if r["method"] == "sct" and r["variant"] == variant
                                           and r["checkpoint_step"] == step}
    at_2, final = student(long, "seed=default", 2), student(short, "", 2)
    assert at_2 and at_2.keys() == final.keys()  # the same network, samples and features (FID: sqrtm's rounding)
    assert all(at_2[key] == pytest.approx(final[key], rel=1e-7) for key in at_2)
    assert all(r["intermediate"] == (r["checkpoint_step"] == 2) for r in long if r["method"] == "sct")
    explicit = plan_jobs(load_recipe(long_path, ["sweep={}", "stages.sct.seed=0"]), runs).train
    default = [job for job in read_manifest(runs, "tiny4").plan.train if job.variant == "seed=default"]
    assert [job.id for job in explicit if job.stage == "sct"] == [job.id for job in default]
    assert student(long, "seed=1", 4)[(1, "fid")] != student(long, "seed=default", 4)[(1, "fid")]
    assert {r["seed"] for r in long if r["method"] == "sct"} == {0, 1, 2}
    table = write_report(read_manifest(runs, "tiny4"), runs, tmp_path / "results")
    assert set(table.n[table.method == "sct"]) == {3}  # one setting, three seeds, final rows only
    curve = pd.read_csv(tmp_path / "results" / "tiny4" / "fid_over_training.csv")
    assert sorted(curve.checkpoint_step.unique()) == [2, 4] and set(curve.n) == {3} and set(curve.runs) == {3}
    assert (tmp_path / "results" / "tiny4" / "fid_over_training.png").stat().st_size > 10_000


def test_fid_over_training_counts_diverged_runs():
    from harness.report.rows import rows_frame
    from harness.report.training_curves import curve_points, diverged_counts

    rows = []
    for ablation, fates in (("all", [False, False, False]), ("none", [False, True, True])):
        for seed, diverged in enumerate(fates):
            job = f"sct-{ablation}-{seed}"
            for step in (50, 100):
                if diverged and step == 50:
                    continue  # a diverged run has its diverged rows only
                rows.append({"job": job, "teacher_job": "teacher", "variant": f"ablation={ablation},seed={seed}",
                             "stage": "sct", "method": "sct", "nfe": 1,
                             "metric": "fid", "seed": seed, "checkpoint_step": step, "diverged": diverged,
                             "intermediate": step == 50, "value": math.nan if diverged else 10.0 * seed + step})
    other_size = [{**row, "job": row["job"] + "-w8", "size": "w8", "value": row["value"] + 1000} for row in rows
                  if row["variant"].startswith("ablation=all")]
    frame = rows_frame(rows + other_size).assign(source="ours")
    sizes = curve_points(frame).groupby("size").fid.max()
    assert sizes["w8"] > 1000 > sizes[""]  # another size is another curve, never averaged in
    frame = frame[frame["size"] == ""]
    counts = diverged_counts(frame).set_index("setting")
    assert counts.loc["ablation=all", "runs"] == 3 and counts.loc["ablation=all", "diverged"] == 0
    assert counts.loc["ablation=none", "runs"] == 3 and counts.loc["ablation=none", "diverged"] == 2
    points = curve_points(frame).set_index(["setting", "checkpoint_step"])
    assert points.loc[("ablation=all", 50), "fid"] == 60.0 and points.loc[("ablation=all", 50), "n"] == 3
    assert points.loc[("ablation=none", 100), "fid"] == 100.0 and points.loc[("ablation=none", 100), "n"] == 1


def test_a_numeric_sweep_axis_is_read_for_its_plot(tmp_path):
    """fid_vs_sweep: one `axis=value` per setting of the jobs trained from another (a value that is not a number,
    e.g. `continuous`, is drawn as a line); other sweeps get none; rows of a job trained from scratch are left out."""
    from harness.report.sweep_plot import swept_values, write_sweep_plot

    def table(settings):
        return pd.DataFrame({"setting": [*settings, ""], "method": [*["sct"] * len(settings), "diffusion"],
                             "method_label": "sCT", "base": [*[False] * len(settings), True], "nfe": 1,
                             "fid": range(10, 11 + len(settings))})

    axis, values, written = swept_values(table(["discrete_steps=16", "discrete_steps=continuous",
                                                "discrete_steps=1024"]))
    assert axis == "discrete_steps" and values.tolist()[0::2] == [16, 1024] and math.isnan(values.iloc[1])
    assert written.iloc[1] == "continuous"
    assert swept_values(table(["ablation=clipping", "ablation=none"])) is None  # not numbers
    assert swept_values(table(["a=1,seed=0", "a=2,seed=0"])) is None  # two axes
    assert swept_values(table(["a=1", "a=None"])) is None  # one value: no line to draw
    assert write_sweep_plot(table(["n=16", "n=64", "n=None"]), tmp_path, "t") == [tmp_path / "fid_vs_sweep.png",
                                                                                  tmp_path / "fid_vs_sweep.pdf"]
    assert (tmp_path / "fid_vs_sweep.png").stat().st_size > 10_000
    assert write_sweep_plot(table(["ablation=x", "ablation=y"]), tmp_path, "t") == []
    assert not (tmp_path / "fid_vs_sweep.png").exists()  # a stale figure is removed

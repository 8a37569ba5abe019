"""The measurements behind results/README.md's findings: sCM Fig. 4's terms of df/dt."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import torch

from harness.tangent_terms import df_dt_terms
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

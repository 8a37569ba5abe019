"""The adaptive weight's feature families: can a linear readout of them follow log(1/sigma) over the training
proposal? (The optimal w(t) of a loss whose error scales like sigma has that shape.)"""
import torch

from scm.methods import method_class
from scm.trigflow import sample_time
from scm.weighting import AdaptiveWeight, UniformWeight, loss_weight

SD = 0.5


def best_fit_residual(features: str, p_mean: float = -1.0, p_std: float = 1.4) -> float:
    """Largest |w(t) - log(1/sigma)| of the least-squares readout (linear layer + bias) over 20k draws of the sCM
    proposal ln(sigma) ~ N(P_mean, P_std^2), sigma = sd tan t, in float64."""
    weight = AdaptiveWeight(features=features, sigma_data=SD).double()
    t = sample_time(20_000, p_mean, p_std, SD, torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        phi = weight.embed(weight.embedding_input(t))
    design = torch.cat([phi, torch.ones(len(t), 1, dtype=phi.dtype)], dim=1)
    target = -torch.log(SD * torch.tan(t))
    coef = torch.linalg.lstsq(design, target[:, None], driver="gelsd").solution
    return float((design @ coef).squeeze(1).sub(target).abs().max())


def test_log_sigma_features_fit_a_log_one_over_sigma_curve():
    before, after = best_fit_residual("positional"), best_fit_residual("log-sigma")
    print(f"\nw(t) least-squares fit of log(1/sigma), max residual: positional {before:.3g} nats, "
          f"log-sigma {after:.3g} nats")
    assert after < 0.05
    assert before > 1.0  # what the old family misses, so the test tells the two apart


def test_log_sigma_weight_starts_at_zero_and_draws_from_torch_as_the_positional_one():
    torch.manual_seed(3)
    AdaptiveWeight(features="positional")
    expected = torch.rand(1)
    torch.manual_seed(3)
    weight = AdaptiveWeight(features="log-sigma")
    assert torch.equal(torch.rand(1), expected)  # frequencies from their own generator: later draws are unchanged
    t = torch.linspace(0.01, 1.5, 7)
    assert torch.equal(weight(t), torch.zeros(7))  # the linear layer starts at 0: every t weighted alike at first
    torch.testing.assert_close(weight.embedding_input(t), torch.log(0.5 * torch.tan(t)) / 4)  # EDM2's c_noise
    assert torch.equal(AdaptiveWeight(features="log-sigma").embed.freqs, weight.embed.freqs)


def test_weight_features_come_from_the_stage_settings():
    for name in ("diffusion", "sct", "scd", "vsd", "scd-vsd"):
        method = method_class(name)
        modules = method(method.Settings(weight_features="log-sigma"), sigma_data=0.25).auxiliary_modules()
        assert modules and all(m.features == "log-sigma" and m.sigma_data == 0.25 for m in modules.values()), name
        assert all(m.features == "positional" for m in method().auxiliary_modules().values()), name
    assert isinstance(loss_weight(False, "log-sigma"), UniformWeight)

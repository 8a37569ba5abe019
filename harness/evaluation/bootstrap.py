"""How much a single run's FID would move with other samples: a bootstrap confidence interval over the generated
features. The generated set is resampled with replacement (its mean and covariance recomputed each time) against
the fixed reference statistics; the FID of each resample gives the percentile interval. A fixed seed makes it
reproducible. In float64 on the evaluation's device (50k x 2048 features: a matmul and an eigendecomposition of
2048 x 2048 per resample, milliseconds on a GPU)."""
import numpy as np
import torch

from .metrics import feature_statistics, frechet_distance

CONFIDENCE = 0.95


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def _fid(x: torch.Tensor, counts: torch.Tensor, mu_r, root_r, trace_r) -> float:
    """FID of the features weighted by `counts` (a resample: how often each row was drawn) against the reference."""
    n = counts.sum()
    mu = counts @ x / n
    centred = x - mu
    sigma = (centred * counts[:, None]).T @ centred / (n - 1)
    cross = torch.linalg.eigvalsh(root_r @ sigma @ root_r).clamp_min(0).sqrt().sum()
    return float(((mu - mu_r) ** 2).sum() + torch.trace(sigma) + trace_r - 2 * cross)


def bootstrap_fid_interval(features: np.ndarray, mu_ref, sigma_ref, resamples: int = 200, seed: int = 0,
                           device=None, measured: float | None = None) -> tuple[float, float]:
    """(low, high) around `measured`, the FID of `features` against (mu_ref, sigma_ref) (metrics.frechet_distance's,
    computed here where not given): as wide as the central 95% of the FID
    of `resamples` resamples, centred the way they are around their median. (A resample repeats samples, which
    raises its FID by about the finite-sample bias; re-centring removes that shift and keeps the spread, which is
    what tells two runs of the same size apart.) tr sqrt(S_b^1/2 S_r S_b^1/2) = tr sqrt(S_r^1/2 S_b S_r^1/2): the
    reference's root is taken once."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64, device=device)
    mu_r = torch.as_tensor(np.asarray(mu_ref), dtype=torch.float64, device=x.device)
    sigma_r = torch.as_tensor(np.asarray(sigma_ref), dtype=torch.float64, device=x.device)
    root_r, trace_r = _sqrt_psd(sigma_r), torch.trace(sigma_r)
    n = len(x)
    if measured is None:
        measured = frechet_distance(*feature_statistics(features), mu_ref, sigma_ref)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    values = [_fid(x, torch.bincount(torch.randint(n, (n,), generator=generator), minlength=n).to(x), mu_r, root_r,
                   trace_r) for _ in range(resamples)]
    tail = (1 - CONFIDENCE) / 2 * 100
    low, middle, high = np.percentile(values, [tail, 50, 100 - tail])
    return float(measured - (middle - low)), float(measured + (high - middle))

"""Improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of balls around its
samples, a ball's radius the distance to the sample's k-th nearest OTHER sample of the same set (k = 3, the paper's
choice). Precision is the share of generated samples inside the real manifold (fidelity), recall the share of real
samples inside the generated manifold (coverage). "Inside" is `<=`, as in the authors' code.

Distances are computed in blocks of rows, so 50k x 50k x 2048 never sits in memory at once (a block of 1024 rows
against 50k points is 400 MB in float64). They are compared squared (sqrt is monotone, so the decisions are the
same) and in float64 by default, so near-ties are decided as a plain pairwise computation decides them.

Protocol: the authors' code (and StyleGAN2-ADA's pr50k3) uses 50k real against 50k generated images, in VGG-16
fc2 features; here the features are FID's (Inception or the digits classifier), so values are comparable across
this harness's runs, not with numbers measured in VGG space. Both sets are cut to the same size (seeded), since the
radii shrink as a set grows and unequal sizes would tilt one side.
"""
import numpy as np
import torch

NEIGHBOURS = 3  # k of the paper
MAX_FEATURES = 50_000  # per side: the paper's protocol; the reference cache keeps up to 50k real features
ROW_BLOCK = 1024


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 through the expansion |a|^2 + |b|^2 - 2 a.b (a matmul), clamped at 0 against rounding."""
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1)[None] - 2 * a @ b.T).clamp_min_(0)


def knn_radii(points: torch.Tensor, k: int = NEIGHBOURS, batch_size: int = ROW_BLOCK) -> torch.Tensor:
    """Squared distance of every point to its k-th nearest other point (itself excluded by index, so duplicates
    still count as neighbours at distance 0)."""
    if len(points) <= k:
        raise ValueError(f"a k-NN radius with k={k} needs more than {k} points, got {len(points)}")
    radii = []
    for start in range(0, len(points), batch_size):
        block = _squared_distances(points[start: start + batch_size], points)
        rows = torch.arange(len(block), device=points.device)
        block[rows, start + rows] = float("inf")
        radii.append(block.kthvalue(k, dim=1).values)
    return torch.cat(radii)


def precision_recall(real_features, fake_features, k: int = NEIGHBOURS, batch_size: int = ROW_BLOCK, device=None,
                     dtype=torch.float64) -> tuple[float, float]:
    """(precision, recall) of the fake features against the real ones, all samples used. One pass over the
    fake-to-real distances serves both: a row says whether that fake sample lies in a real ball, a column whether
    that real sample lies in a fake ball."""
    real = torch.as_tensor(np.asarray(real_features), dtype=dtype, device=device)
    fake = torch.as_tensor(np.asarray(fake_features), dtype=dtype, device=device)
    real_radii, fake_radii = knn_radii(real, k, batch_size), knn_radii(fake, k, batch_size)
    inside_real = torch.zeros(len(fake), dtype=torch.bool, device=real.device)
    covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    for start in range(0, len(fake), batch_size):
        block = _squared_distances(fake[start: start + batch_size], real)
        inside_real[start: start + len(block)] = (block <= real_radii[None]).any(1)
        covered |= (block <= fake_radii[start: start + len(block), None]).any(0)
    return inside_real.double().mean().item(), covered.double().mean().item()


def matched_precision_recall(real_features, fake_features, max_count: int = MAX_FEATURES, seed: int = 0,
                             device=None) -> dict | None:
    """The evaluation's precision and recall: both sets cut to the same size, min(real, fake, max_count), by a
    seeded random choice (the same features always give the same values); the size used is returned with them.
    None when a side has too few samples for a k-th neighbour (a tiny smoke run), as KID is left out without
    real features."""
    count = min(len(real_features), len(fake_features), max_count)
    if count <= NEIGHBOURS:
        return None
    rng = np.random.default_rng(seed)
    real = np.asarray(real_features)[np.sort(rng.permutation(len(real_features))[:count])]
    fake = np.asarray(fake_features)[np.sort(rng.permutation(len(fake_features))[:count])]
    precision, recall = precision_recall(real, fake, device=device)
    return {"precision": precision, "recall": recall, "k": NEIGHBOURS, "count": count}

"""Frechet distance of our own, in float64 and through eigenvalues (clean-fid's uses scipy's sqrtm(disp=...),
which SciPy 1.18 removed)."""
import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2), all in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _sqrt_psd(sigma1)
    cross = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def kernel_distance(features: np.ndarray, reference: np.ndarray, seed: int = 0) -> float:
    """KID through clean-fid's kernel_distance, whose random subsets come from numpy's global RNG: seeded here (and
    the caller's RNG state restored), so the same features always give the same KID."""
    from cleanfid.fid import kernel_distance as cleanfid_kid

    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return float(cleanfid_kid(features, reference))
    finally:
        np.random.set_state(state)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))

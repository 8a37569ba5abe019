"""Improved precision and recall (k-NN manifolds): the cases whose answer is known by hand, a plain pairwise
reference on random data (exact counts), blocks that do not change the answer, and the evaluation's rows."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.compute.distributed import Ranks
from harness.evaluation.precision_recall import knn_radii, matched_precision_recall, precision_recall
from harness.run import evaluate


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[int, int]:
    """(fake samples inside the real manifold, real samples inside the fake manifold), by loops over a full
    distance matrix; a radius is the distance to the k-th nearest OTHER sample of the same set."""
    def radii(points):
        out = []
        for i, p in enumerate(points):
            others = sorted(np.linalg.norm(p - q) for j, q in enumerate(points) if j != i)
            out.append(others[k - 1])
        return out

    def inside(queries, points):
        r = radii(points)
        return sum(any(np.linalg.norm(q - p) <= r[j] for j, p in enumerate(points)) for q in queries)

    return inside(fake, real), inside(real, fake)


def line(start: float, count: int, dim: int = 4) -> np.ndarray:
    """Points start, start + 1, ... along the first axis: every distance is an exact integer."""
    points = np.zeros((count, dim))
    points[:, 0] = start + np.arange(count)
    return points


def test_a_set_against_itself_is_all_precision_and_all_recall():
    feats = np.random.default_rng(0).normal(size=(60, 8))
    assert precision_recall(feats, feats) == (1.0, 1.0)


def test_far_apart_sets_share_nothing():
    rng = np.random.default_rng(1)
    assert precision_recall(rng.normal(size=(40, 8)), 1000 + rng.normal(size=(50, 8))) == (0.0, 0.0)


def test_a_subset_of_one_cluster_is_precise_but_misses_the_rest():
    """Real: points 0..9 and 1000..1009 on a line. Fake: 0..4. Fake radii (k=3): 3, 2, 2, 2, 3, so the fake
    manifold reaches 4 + 3 = 7 (inclusive: 7 sits exactly on the boundary) and nothing near 1000: real 0..7 are
    covered, recall 8/20; every fake sample is a real one, precision 1."""
    real = np.concatenate([line(0, 10), line(1000, 10)])
    fake = line(0, 5)
    assert knn_radii(torch.as_tensor(fake), k=3).sqrt().tolist() == [3, 2, 2, 2, 3]
    assert precision_recall(real, fake, k=3) == (1.0, 8 / 20)


def test_a_radius_excludes_its_own_point_but_counts_a_duplicate():
    assert knn_radii(torch.as_tensor(line(0, 1)[[0, 0]].tolist() + line(5, 1).tolist()), k=1).tolist() == [0, 0, 25]
    assert knn_radii(torch.tensor([[0.0], [1.0], [3.0], [6.0]]), k=1).tolist() == [1, 1, 4, 9]
    with pytest.raises(ValueError, match="needs more than 3 points"):
        knn_radii(torch.zeros(3, 2), k=3)


@pytest.mark.parametrize("k, n_real, n_fake, dim", [(1, 30, 25, 2), (3, 40, 40, 5), (5, 17, 50, 8), (2, 45, 12, 3)])
def test_counts_equal_a_plain_pairwise_computation(k, n_real, n_fake, dim):
    rng = np.random.default_rng(k * 100 + n_real)
    real, fake = rng.normal(size=(n_real, dim)), rng.normal(1.0, 1.0, size=(n_fake, dim))
    precision, recall = precision_recall(real, fake, k=k, batch_size=7)
    inside_real, covered = brute_force(real, fake, k)
    assert 0 < inside_real < n_fake and 0 < covered < n_real  # the case is not trivially 0 or 1
    assert (round(precision * n_fake), round(recall * n_real)) == (inside_real, covered)


def test_blocks_of_any_size_give_the_same_answer():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(203, 16)).astype(np.float32), rng.normal(0.3, 1.2, size=(157, 16))
    whole = precision_recall(real, fake, batch_size=10_000)
    assert 0 < whole[0] < 1 and 0 < whole[1] < 1
    assert all(precision_recall(real, fake, batch_size=b) == whole for b in (1, 5, 64, 157, 203))


def test_the_evaluation_cuts_both_sides_to_one_seeded_size():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(300, 6)), rng.normal(0.2, 1.1, size=(120, 6))
    first = matched_precision_recall(real, fake)
    assert first == matched_precision_recall(real, fake) and first["count"] == 120 and first["k"] == 3
    assert matched_precision_recall(real, fake, max_count=50)["count"] == 50
    assert matched_precision_recall(real, fake, seed=1) != first  # a different subset of the real side
    assert matched_precision_recall(real, fake[:3]) is None  # too few for a 3rd neighbour


def test_every_settings_rows_carry_precision_and_recall(monkeypatch, tmp_path):
    """_setting_rows on a stand-in (features given, no network): precision and recall rows beside FID and KID,
    in the same feature space and reference, with the k and the samples per side."""
    rng = np.random.default_rng(5)
    fake, real = rng.normal(size=(40, 8)), rng.normal(size=(60, 8))
    monkeypatch.setattr(evaluate, "shard_features", lambda *args: ({"features": fake}, None))
    monkeypatch.setattr(evaluate, "generate", lambda *args, **kwargs: torch.zeros(1, 1, 8, 8))
    monkeypatch.setattr(evaluate, "write_grid", lambda *args: None)
    job = SimpleNamespace(evaluation=SimpleNamespace(samples_per_class=40, shard_size=64, bootstrap_resamples=50),
                          sample_seed=0, sampling=SimpleNamespace(reports=lambda metric, guidance: True))
    extractor = SimpleNamespace(name="stand-in-8d", device=torch.device("cpu"))
    inputs = SimpleNamespace(job=job, sampler=lambda net: None, count=40, labels=None, vae=None,
                             data=SimpleNamespace(num_classes=0, shape=(1, 8, 8)), method=SimpleNamespace(sigma_data=0.5),
                             extractors={"features": extractor})
    setting = SimpleNamespace(name="s", sampler="consistency", nfe=lambda conditional: 1, guidance=None)
    ref = {"mu": real.mean(0), "sigma": np.cov(real, rowvar=False), "feats": real, "source": "stand-in",
           "hash": "h", "count": 60, "real_vs_real_half_fid": 0.0}
    rows = evaluate._setting_rows(inputs, None, setting, tmp_path, {"features": ref}, Ranks())
    by_metric = {row["metric"]: row for row in rows}
    assert set(by_metric) == {"fid", "kid", "precision", "recall"}
    expected = matched_precision_recall(real, fake)
    for name in ("precision", "recall"):
        row = by_metric[name]
        assert row["value"] == expected[name] and 0 < row["value"] < 1
        assert (row["pr_k"], row["pr_samples"], row["features"], row["num_samples"]) == (3, 40, "stand-in-8d", 40)
    assert "pr_k" not in by_metric["fid"]
    fid = by_metric["fid"]  # with its bootstrap interval over the generated samples (50 resamples here)
    assert fid["fid_ci_low"] < fid["value"] < fid["fid_ci_high"] and fid["fid_ci_resamples"] == 50

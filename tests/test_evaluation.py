"""Evaluation at scale: per-sample seeds (the same samples however the work is split), shards that resume, rank
splits, features streamed exactly as clean-fid computes them from PNGs, our Frechet distance against clean-fid's,
and the pre-flight errors for missing Inception weights or reference statistics."""
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from harness.compute.distributed import Ranks
from harness.evaluation.features import build_extractor, check_inception, stream_features
from harness.evaluation.generate import generate
from harness.evaluation.images import to_uint8
from harness.evaluation.metrics import frechet_distance
from harness.evaluation.reference import check_reference
from harness.evaluation.shards import Sampler, shard_features
from harness.recipe.load import load_recipe
from scm.methods import SCT, Diffusion, Setting
from helpers import ROOT

SEED = 0
CONSISTENCY = (SCT(), Setting("consistency", 2, 2))
ODE_WITH_CFG = (Diffusion(), Setting("dpm-solver-2s", 3, 5, guidance=2.0, cfg=2.0))


@pytest.fixture(scope="module")
def setup():
    from harness.data.images import load_digits_data
    from scm.nets import build_network

    torch.manual_seed(0)
    net = build_network("toy-unet", in_channels=1, resolution=8, num_classes=10, channels=16).eval()
    labels = torch.arange(10).repeat_interleave(3)
    return net, labels, load_digits_data(), build_extractor("digits-classifier")


@pytest.mark.parametrize("method, setting", [CONSISTENCY, ODE_WITH_CFG], ids=["consistency", "ode-cfg"])
def test_a_sample_is_the_same_however_the_work_is_split(setup, method, setting):
    net, labels, data, _ = setup
    whole = generate(method, net, setting, range(30), labels, data.shape, SEED, batch_size=30)
    pieces = torch.cat([generate(method, net, setting, range(a, min(a + 7, 30)), labels, data.shape, SEED,
                                 batch_size=4) for a in range(0, 30, 7)])
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-6)
    again = generate(method, net, setting, [29, 3], labels, data.shape, SEED)
    torch.testing.assert_close(again, whole[[29, 3]], rtol=1e-5, atol=1e-6)
    other_seed = generate(method, net, setting, range(2), labels, data.shape, SEED + 1)
    assert not torch.allclose(other_seed, whole[:2])


def _features(setup, folder, shard_size, ranks=Ranks(), part=(0, 1)):
    net, labels, data, extractor = setup
    method, setting = CONSISTENCY
    sampler = Sampler(method, net, data.shape, labels, SEED, 512, {"features": extractor})
    feats = shard_features(sampler, setting, folder, len(labels), shard_size, ranks, part=part)[0]
    return feats.get("features", np.zeros((0,)))


def test_shards_and_ranks_give_the_same_features_and_resume(setup, tmp_path):
    one = _features(setup, tmp_path / "one", 30)
    sharded = _features(setup, tmp_path / "sharded", 7)
    np.testing.assert_allclose(sharded, one, rtol=1e-5, atol=1e-5)
    assert len(list((tmp_path / "sharded").glob("features-*.npy"))) == 5
    # two ranks: rank 1 writes shards 1 and 3; rank 0 writes 0, 2, 4, waits for all, returns them in seed order
    assert _features(setup, tmp_path / "ranks", 7, Ranks(1, 2, 1)).size == 0
    assert sorted(p.name for p in (tmp_path / "ranks").glob("features-*.npy")) == [
        "features-0000007-0000014.npy", "features-0000021-0000028.npy"]
    np.testing.assert_array_equal(_features(setup, tmp_path / "ranks", 7, Ranks(0, 2, 0)), sharded)
    # resume: a lost shard is made again, the others are read back untouched
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "sharded").glob("features-*.npy")}
    lost = tmp_path / "sharded" / "features-0000014-0000021.npy"
    lost.unlink()
    np.testing.assert_array_equal(_features(setup, tmp_path / "sharded", 7), sharded)
    assert lost.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items() if p != lost)


def test_an_array_of_generation_tasks_and_ranks_split_the_shards_and_the_evaluation_reuses_them(setup, tmp_path):
    """Parts of a generation array (x ranks inside each) write disjoint shards; the evaluation then generates
    nothing and gathers features bitwise equal to generating everything in one process."""
    alone = _features(setup, tmp_path / "alone", 4)
    folder = tmp_path / "array"
    written = {}
    for task in range(2):
        for rank in range(2):
            assert _features(setup, folder, 4, Ranks(rank, 2, rank), part=(task, 2)).size == 0
            files = {p.name for p in folder.glob("features-*.npy")} - set().union(*written.values())
            written[task, rank] = files
    # 8 shards of 4 (30 samples) dealt over 2 tasks x 2 ranks: shard k goes to task (k // 2) % 2, rank k % 2
    assert written[1, 0] == {"features-0000008-0000012.npy", "features-0000024-0000028.npy"}
    assert sum(len(f) for f in written.values()) == 8
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    np.testing.assert_array_equal(_features(setup, folder, 4), alone)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.npy")} == stamps  # nothing generated again
    # a task that never ran: the evaluation makes its shards itself
    for name in written[1, 1]:
        (folder / name).unlink()
    np.testing.assert_array_equal(_features(setup, folder, 4), alone)


def _write_pngs(pixels: np.ndarray, folder) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(folder / f"{i:06d}.png")


def _folder_features(folder, extractor) -> np.ndarray:
    """clean-fid's own folder pipeline: PNGs read back, the extractor's resize, its model."""
    from cleanfid import fid

    return fid.get_folder_features(str(folder), model=extractor.model, num_workers=0, batch_size=512,
                                   device=torch.device("cpu"), mode="clean", custom_fn_resize=extractor.resize,
                                   verbose=False)


def test_streamed_features_equal_clean_fids_png_pipeline(setup, tmp_path):
    *_, data, extractor = setup
    grey = to_uint8(data.images[:64])
    colour = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3), dtype=np.uint8)
    for name, pixels in (("grey", grey), ("colour", colour)):
        _write_pngs(pixels, tmp_path / name)
        np.testing.assert_array_equal(stream_features(pixels, extractor), _folder_features(tmp_path / name, extractor))


def test_our_frechet_distance_matches_clean_fids():
    from cleanfid import fid

    rng = np.random.default_rng(0)
    for dim in (8, 64):
        a, b = rng.normal(size=(500, dim)), rng.normal(0.3, 1.2, size=(400, dim)) @ rng.normal(size=(dim, dim))
        mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                theirs = fid.frechet_distance(mu1, s1, mu2, s2)
            except TypeError:  # SciPy >= 1.18 removed sqrtm(disp=); the reason we keep our own
                pytest.skip("clean-fid's frechet_distance fails with this SciPy")
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(theirs, rel=1e-6)


def test_missing_inception_weights_say_which_file_and_where_from(tmp_path):
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt.*download https://"):
        check_inception(tmp_path / "inception-2015-12-05.pt")


def test_missing_reference_statistics_are_named(tmp_path):
    evaluation = load_recipe(ROOT / "recipes" / "table1_cifar10.yaml").evaluation
    with pytest.raises(FileNotFoundError, match=r"cifar10_legacy_tensorflow_train_32\.npz not found.*clean-fid/stats"):
        check_reference(evaluation, (3, 32, 32))
    with pytest.raises(FileNotFoundError, match="x.npz not found"):
        check_reference(evaluation.model_copy(update={"reference": "x.npz"}), (3, 32, 32))


def test_run_stops_before_submitting_when_the_paper_fid_cannot_be_computed(tmp_path):
    """A paper recipe on data that exists but without Inception weights and the reference statistics: both listed
    at once, a line each naming the file, exit 2, nothing written."""
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(ROOT / "recipes" / "table1_cifar10.yaml"),
                           "--executor", "local", "--set", "data.name=synthetic", "--set", "data.shape=[3,32,32]",
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, cwd=ROOT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[0].endswith("2 problems, all listed:") and len(lines) == 3, done.stderr
    assert "inception-2015-12-05.pt" in lines[1] and "cifar10_legacy_tensorflow_train_32.npz" in lines[2]
    assert not (tmp_path / "runs").exists()


def test_edm2_reference_pickles_import_and_code_in_them_is_refused(tmp_path):
    import os
    import pickle

    from harness.evaluation.reference import _load_reference_file
    from harness.tools.refs import import_reference

    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 6))
    refs = {"fid": {"mu": a.mean(0), "sigma": np.cov(a, rowvar=False)},
            "fd_dinov2": {"mu": a.mean(0)[:4], "sigma": np.eye(4)}}
    (tmp_path / "img64.pkl").write_bytes(pickle.dumps(refs))
    loaded = _load_reference_file(import_reference(tmp_path / "img64.pkl", tmp_path / "refs" / "img64.npz"))
    np.testing.assert_array_equal(loaded["mu"], refs["fid"]["mu"])
    np.testing.assert_array_equal(loaded["sigma"], refs["fid"]["sigma"])

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"fid": Evil()}))
    with pytest.raises(ValueError, match="not an EDM2 reference pickle.*refused"):
        import_reference(tmp_path / "evil.pkl", tmp_path / "evil.npz")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "evil.npz").exists()


class _StandInLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2048, 1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


class _StandInInception(torch.nn.Module):
    """A randomly initialised module with the interface of clean-fid's TorchScript Inception (layers, and forward
    with return_features), standing in for the real weights, which cannot be downloaded here."""

    def __init__(self):
        super().__init__()
        self.layers = _StandInLayers()

    def forward(self, x, return_features: bool = False):
        return self.layers(torch.nn.functional.interpolate(x / 128 - 1, size=(299, 299), mode="bilinear"))


def test_inception_extractor_runs_through_clean_fid_with_a_stand_in(tmp_path):
    import harness.evaluation.features as features

    target = features.INCEPTION_WEIGHTS
    if target.exists():
        pytest.skip(f"{target} exists (real weights?); not overwriting it with a stand-in")
    torch.jit.script(_StandInInception()).save(str(target))
    try:
        pixels = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
        for mode in ("legacy_tensorflow", "clean"):
            extractor = build_extractor("inception", mode)
            assert extractor.name == f"inception-{mode}"
            feats = stream_features(pixels, extractor)
            assert feats.shape == (5, 2048) and np.isfinite(feats).all()
    finally:
        target.unlink()


def test_kid_is_deterministic_and_leaves_numpys_rng_alone():
    from harness.evaluation.metrics import kernel_distance

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(1200, 16)), rng.normal(0.2, 1.0, size=(1100, 16))
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    first = kernel_distance(a, b)
    assert np.random.random() == before  # the caller's global RNG state is restored
    assert kernel_distance(a, b) == first and first > 0

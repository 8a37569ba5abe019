"""Digits FID classifier: shipped weights, clean-fid wrapper, and an offline clean-fid run."""

import numpy as np
import pytest
import torch
from PIL import Image

from harness.evaluation.classifier import (
    CleanFidDigitsExtractor,
    digits_split,
    identity_resize,
    load_digits_classifier,
    to_uint8_images,
)


@pytest.fixture(scope="module")
def classifier():
    return load_digits_classifier()


@pytest.fixture(scope="module")
def split():
    return digits_split()


def test_shipped_weights_heldout_accuracy(classifier, split):
    _, _, x_test, y_test = split
    assert x_test.shape == (450, 1, 8, 8) and x_test.min() >= -1 and x_test.max() <= 1
    with torch.no_grad():
        acc = (classifier(x_test).argmax(1) == y_test).float().mean().item()
    assert acc >= 0.95, f"held-out accuracy {acc:.4f}"


def test_missing_weights_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_digits_classifier.py"):
        load_digits_classifier(tmp_path / "nope.pt")


def test_extractor_matches_classifier(classifier, split):
    _, _, x_test, _ = split
    x = x_test[:64]
    # What clean-fid hands the model for an 8x8 PNG: float [B, 3, 8, 8] in [0, 255].
    batch = torch.from_numpy(to_uint8_images(x)).float().unsqueeze(1).repeat(1, 3, 1, 1)
    extractor = CleanFidDigitsExtractor(classifier)
    feats = extractor(batch)
    assert isinstance(feats, torch.Tensor) and feats.shape == (64, 64)
    assert torch.isfinite(feats).all()
    with torch.no_grad():
        assert torch.equal(classifier.head(feats).argmax(1), classifier(x).argmax(1))
    with pytest.raises(ValueError, match="identity_resize"):
        extractor(torch.zeros(2, 3, 299, 299))


def _write_pngs(folder, images_uint8):
    folder.mkdir()
    for i, img in enumerate(images_uint8):
        Image.fromarray(img).save(folder / f"{i:04d}.png")


# cleanfid.fid.frechet_distance passes scipy's deprecated `disp=` to sqrtm; not ours to fix.
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_cleanfid_folder_features_offline(classifier, split, tmp_path):
    from cleanfid import fid

    _, _, x_test, _ = split
    real = to_uint8_images(x_test[:200])
    noise = np.random.default_rng(0).integers(0, 256, size=(100, 8, 8), dtype=np.uint8)
    dirs = {"a": real[:100], "b": real[100:], "noise": noise}
    for name, imgs in dirs.items():
        _write_pngs(tmp_path / name, imgs)

    extractor = CleanFidDigitsExtractor(classifier)
    stats = {}
    for name in dirs:
        feats = fid.get_folder_features(
            str(tmp_path / name), model=extractor, num_workers=0, batch_size=64,
            device=torch.device("cpu"), mode="clean", custom_fn_resize=identity_resize,
            verbose=False,
        )
        assert feats.shape == (100, 64) and np.isfinite(feats).all()
        stats[name] = (feats.mean(axis=0), np.cov(feats, rowvar=False))

    # The PNG round trip must not change what the classifier sees.
    direct = extractor(torch.from_numpy(real[:100]).float().unsqueeze(1).repeat(1, 3, 1, 1)).numpy()
    np.testing.assert_allclose(stats["a"][0], direct.mean(axis=0), rtol=1e-5, atol=1e-5)

    fd_real = fid.frechet_distance(*stats["a"], *stats["b"])
    fd_noise = fid.frechet_distance(*stats["a"], *stats["noise"])
    assert np.isfinite(fd_real) and np.isfinite(fd_noise)
    assert fd_real < fd_noise, (fd_real, fd_noise)

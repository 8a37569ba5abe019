"""FD_DINOv2: loaded through torch.hub from local files only (a stand-in hub repository with the real entry point
name and weights file name, since Meta's repository and weights cannot be fetched here), EDM2's preprocessing,
the pre-flight error, reference statistics from `refs import` files, and the metric rows of a whole run."""
import numpy as np
import pytest
import torch
import yaml

from harness.evaluation.dinov2 import IMAGENET_MEAN, IMAGENET_STD, WEIGHTS_NAME, WEIGHTS_URL, check_dinov2
from harness.evaluation.features import build_dinov2_extractor, stream_features

HUBCONF = f'''
dependencies = ["torch"]
import torch


class TinyBackbone(torch.nn.Module):
    """Stands in for DINOv2's ViT-L/14: 14x14 patches -> mean token, 16-d instead of 1024-d."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 16, 14, 14)

    def forward(self, x):
        assert x.shape[-2:] == (224, 224), x.shape
        return self.patch(x).mean((2, 3))


def dinov2_vitl14(pretrained=True, **kwargs):
    model = TinyBackbone()
    if pretrained:  # what Meta's hubconf does: the url's file from torch hub's checkpoint folder
        model.load_state_dict(torch.hub.load_state_dict_from_url("{WEIGHTS_URL}", map_location="cpu"))
    return model
'''


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub folder holding the stand-in repository and its weights, as `torch.hub.load` leaves them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    root = tmp_path / "torch" / "hub"
    repo = root / "facebookresearch_dinov2_main"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(HUBCONF)
    (root / "checkpoints").mkdir()
    torch.manual_seed(0)
    weights = torch.nn.Conv2d(3, 16, 14, 14)
    torch.save({f"patch.{k}": v for k, v in weights.state_dict().items()}, root / "checkpoints" / WEIGHTS_NAME)
    return root, weights


def test_missing_dinov2_names_the_files_and_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="facebookresearch_dinov2_main not found.*torch.hub.load"):
        check_dinov2()
    (tmp_path / "hub" / "facebookresearch_dinov2_main").mkdir(parents=True)
    (tmp_path / "hub" / "facebookresearch_dinov2_main" / "hubconf.py").write_text("")
    with pytest.raises(FileNotFoundError, match=f"checkpoints/{WEIGHTS_NAME} not found.*{WEIGHTS_URL}"):
        check_dinov2()


def test_features_follow_edm2s_preprocessing_with_the_hub_weights(hub):
    _, weights = hub
    extractor = build_dinov2_extractor()
    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)  # grey digits -> RGB
    feats = stream_features(pixels, extractor)
    x = torch.from_numpy(pixels).float()[:, None].expand(-1, 3, -1, -1)
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", antialias=True) / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = weights(x).mean((2, 3)).numpy()
    assert feats.shape == (5, 16)
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)


def test_a_run_reports_fd_dinov2_beside_fid(hub, tmp_path):
    """The whole digits pipeline with fd_dinov2: every setting gets an fd_dinov2 row measured against DINOv2
    statistics of the data set, recorded with its own reference and extractor; a statistics file from
    `refs import` (mu_dinov2, sigma_dinov2) is used where the recipe names one."""
    from helpers import tiny_recipe

    from harness.evaluation.reference import reference_statistics
    from harness.recipe.load import load_recipe
    from harness.recipe.planner import plan_jobs
    from harness.run.runner import run_recipe

    class Quiet:
        def update(self, name, info):
            pass

    path = tiny_recipe(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["evaluation"].update(fd_dinov2=True, samples_per_class=3)
    raw["stages"].pop("scd")
    path.write_text(yaml.safe_dump(raw))
    rows = run_recipe(load_recipe(path), path, tmp_path / "runs", "debug", Quiet())
    fid = [r for r in rows if r["metric"] == "fid"]
    dino = [r for r in rows if r["metric"] == "fd_dinov2"]
    assert [(r["stage"], r["nfe"]) for r in dino] == [(r["stage"], r["nfe"]) for r in fid] and len(dino) == 3
    assert all(r["features"] == "dinov2-vitl14" and r["value"] > 0 and r["reference_count"] == 1797 for r in dino)
    assert dino[0]["reference_hash"] != fid[0]["reference_hash"]

    mu, sigma = np.arange(16.0), np.eye(16) * 2
    npz = tmp_path / "img.npz"
    np.savez(npz, mu=np.zeros(64), sigma=np.eye(64), mu_dinov2=mu, sigma_dinov2=sigma)
    raw["evaluation"]["reference"] = str(npz)
    path.write_text(yaml.safe_dump(raw))
    job = plan_jobs(load_recipe(path), tmp_path / "runs").evaluate[0]
    ref = reference_statistics(job, None, tmp_path / "runs" / "_reference", build_dinov2_extractor(), None,
                               "_dinov2")
    np.testing.assert_array_equal(ref["mu"], mu)
    np.testing.assert_array_equal(ref["sigma"], sigma)

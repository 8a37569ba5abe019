"""FD_DINOv2 (EDM2's second metric): the Frechet distance in the feature space of DINOv2 ViT-L/14, an optional
metric beside FID where the model is on this machine.

The model is Meta's own code and weights through torch.hub, read from local files only: the hub repository
(a clone of facebookresearch/dinov2, by default the one torch.hub caches) and its weights file in torch.hub's
checkpoint folder, where the repository's loader looks before it would download. Images go in the way EDM2 feeds
them: [0, 255] -> bicubic (antialiased) to 224 x 224 -> / 255 -> ImageNet mean and std; the 1024-d class token
is the feature.
"""
from pathlib import Path

import torch

ENTRY = "dinov2_vitl14"
WEIGHTS_NAME = "dinov2_vitl14_pretrain.pth"
WEIGHTS_URL = f"https://dl.fbaipublicfiles.com/dinov2/{ENTRY}/{WEIGHTS_NAME}"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FETCH = ("on a machine with internet run python -c \"import torch; torch.hub.load('facebookresearch/dinov2', "
         f"'{ENTRY}')\" and copy its torch hub folder (repository and checkpoints/) here, or set TORCH_HOME")


def hub_paths(repo: str | None = None) -> tuple[Path, Path]:
    """(hub repository folder, weights file) where torch.hub keeps them (TORCH_HOME decides the root)."""
    hub = Path(torch.hub.get_dir())
    return Path(repo) if repo else hub / "facebookresearch_dinov2_main", hub / "checkpoints" / WEIGHTS_NAME


def check_dinov2(repo: str | None = None) -> None:
    """Fail early, naming both files, when DINOv2 is not on this machine."""
    repo_dir, weights = hub_paths(repo)
    if not (repo_dir / "hubconf.py").is_file():
        raise FileNotFoundError(f"DINOv2 hub repository {repo_dir} not found (needs hubconf.py); {FETCH}")
    if not weights.is_file():
        raise FileNotFoundError(f"DINOv2 weights {weights} not found; {FETCH} (the file is {WEIGHTS_URL})")


def load_dinov2(repo: str | None = None, device=None):
    """DINOv2 ViT-L/14 from the local hub repository, as a module mapping [B, 3, H, W] in [0, 255] to [B, 1024]."""
    check_dinov2(repo)
    repo_dir, _ = hub_paths(repo)
    net = torch.hub.load(str(repo_dir), ENTRY, source="local", pretrained=True, verbose=False)
    return DinoFeatures(net.eval().requires_grad_(False)).to(device or torch.device("cpu"))


class DinoFeatures(torch.nn.Module):
    """EDM2's preprocessing in front of the network."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        x = torch.nn.functional.interpolate(x.float(), size=(224, 224), mode="bicubic", antialias=True)
        return self.net((x / 255 - self.mean) / self.std)

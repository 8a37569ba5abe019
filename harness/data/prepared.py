"""The prepared data set format: what `scm-bench prepare` writes and training memory-maps.

A prepared data set is a folder OUT holding
  images.npy    uint8 [N, C, H, W] pixels, or float16 [N, 8, h, w] the VAE posteriors of sCM-normalized latents
                (4 mean channels, then 4 std channels; data sets prepared before: [N, 4, h, w], the means only)
  labels.npy    int64 [N] class indices
  dataset.json  name, kind (pixels | latents), shape [C, H, W] (what training sees), count, num_classes, source
                (+ vae, latent_mean, latent_std, sigma_data, resolution, posterior: true for latents)
It is written into OUT.partial and renamed to OUT only when complete, so a crash never leaves a half-written OUT.
"""
from pathlib import Path

import numpy as np
import torch

from ..store import read_json
from .latents import draw_latents
from .images import ImageData

IMAGES, LABELS, META = "images.npy", "labels.npy", "dataset.json"
# Prepared data sets (`scm-bench prepare NAME`): image shape [C, H, W] and number of classes
PREPARED_DATASETS = {"cifar10": ((3, 32, 32), 10), "imagenet64": ((3, 64, 64), 1000),
                     "imagenet512-latents": ((4, 64, 64), 1000)}  # SD VAE latents of 512x512 images


def partial_path(out: Path) -> Path:
    """Where a prepare in progress writes OUT."""
    return out.with_name(out.name + ".partial")


class PreparedImages:
    """A prepared data set's images, memory-mapped: indexing reads only the rows asked for.

    Stands in for the [N, C, H, W] float tensor the trainer indexes: len(x), x.shape, x.device, x.to(device) and
    x[index] (LongTensor on any device, int or slice) -> float32 on x.device; pixels in [-1, 1]; latents stored as
    posteriors are their means, or with `draw` a fresh draw from each posterior per read (training, as EDM2),
    from torch's generator (whose state the training checkpoint keeps).
    """

    def __init__(self, array: np.ndarray, kind: str, device="cpu", posterior: bool = False, draw: bool = False):
        self.array, self.kind, self.device = array, kind, torch.device(device)
        self.posterior, self.draw = posterior, draw

    def __len__(self) -> int:
        return len(self.array)

    @property
    def shape(self):
        n, c, *rest = self.array.shape
        return torch.Size([n, c // 2 if self.posterior else c, *rest])

    def to(self, device) -> "PreparedImages":
        return PreparedImages(self.array, self.kind, device, self.posterior, self.draw)

    def __getitem__(self, index):
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        rows = torch.from_numpy(np.array(self.array[index]))  # a copy: the map itself is read-only
        rows = rows.to(self.device).float()  # moved as uint8 / float16: a quarter / half the bytes of float32
        if self.kind == "pixels":
            return rows / 127.5 - 1.0
        if not self.posterior:
            return rows
        return draw_latents(rows) if self.draw else rows.chunk(2, dim=-3)[0]

    def __repr__(self) -> str:
        return f"PreparedImages({self.kind}, shape={list(self.shape)}, device={self.device})"


def load_prepared(path, name: str = "NAME", draw_latents: bool = False) -> ImageData:
    """A prepared folder as ImageData whose images stay on disk (PreparedImages) and labels in memory; latents read
    as posterior means, or as draws from the posteriors with `draw_latents` (training)."""
    folder = Path(path)
    hint = f"run scm-bench prepare {name} --source ... --out {folder}"
    if not folder.is_dir():
        partial = partial_path(folder)
        interrupted = f" ({partial} is what an interrupted prepare left)" if partial.exists() else ""
        raise FileNotFoundError(f"prepared data set {folder} not found{interrupted}; {hint}")
    missing = [name for name in (META, IMAGES, LABELS) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"prepared data set {folder} has no {missing[0]}; {hint} --overwrite")
    meta = read_json(folder / META)
    if not isinstance(meta, dict) or meta.get("kind") not in ("pixels", "latents"):
        raise ValueError(f"{folder / META} is not a prepared data set description; {hint} --overwrite")
    images = np.load(folder / IMAGES, mmap_mode="r")
    labels = np.load(folder / LABELS)
    posterior = bool(meta.get("posterior"))
    stored = [meta["shape"][0] * (2 if posterior else 1), *meta["shape"][1:]]
    if images.shape != (meta["count"], *stored) or labels.shape != (len(images),):
        raise ValueError(f"{folder}: images.npy {list(images.shape)}, labels.npy {list(labels.shape)} and "
                         f"{META} disagree; {hint} --overwrite")
    images = PreparedImages(images, meta["kind"], posterior=posterior, draw=posterior and draw_latents)
    return ImageData(images, torch.from_numpy(labels.astype(np.int64)),
                     int(meta["num_classes"]))

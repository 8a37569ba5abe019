"""Feature extractors for FID and KID: the digits classifier, or clean-fid's Inception (the paper's FID), with
images streamed from uint8 arrays through clean-fid's own resize and tensor steps, so nothing is written to disk and
the features equal those of the same images saved as PNGs (PNG is lossless).

Offline first: Inception's weights live at clean-fid's fixed path; `check_inception` fails at once, before any job
is submitted, with the file name and where to get it. DINOv2 (FD_DINOv2, optional) likewise, see dinov2.py.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision
from PIL import Image

from .classifier import CleanFidDigitsExtractor, load_digits_classifier
from .dinov2 import load_dinov2

DIGITS = "digits-classifier"
INCEPTION = "inception"
# clean-fid loads its TorchScript Inception from here (cleanfid/features.py: InceptionV3W("/tmp", download=True))
INCEPTION_WEIGHTS = Path("/tmp/inception-2015-12-05.pt")
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


@dataclass
class Extractor:
    name: str  # recorded with every metrics row, e.g. "inception-legacy_tensorflow"
    model: Callable  # float [B, 3, H, W] in [0, 255] -> features [B, D]
    resize: Callable  # uint8 HWC image -> resized image (clean-fid's resizer for its mode)
    device: object


def check_inception(weights: Path = INCEPTION_WEIGHTS) -> None:
    """Fail early and say exactly what to fetch when the Inception weights are not on this machine."""
    if not Path(weights).is_file():
        raise FileNotFoundError(f"Inception weights {weights} not found (clean-fid reads them from that fixed path); "
                                f"on a machine with internet download {INCEPTION_URL} and copy it to {weights}")


def build_extractor(features: str, mode: str = "legacy_tensorflow", device=None) -> Extractor:
    """The recipe's feature extractor: digits classifier (8x8 grey) or clean-fid's Inception in `mode`."""
    device = device or torch.device("cpu")
    if features == DIGITS:
        return Extractor("digits-classifier-64d", CleanFidDigitsExtractor(load_digits_classifier()).to(device),
                         resize_for_classifier, device)
    if features != INCEPTION:
        raise ValueError(f"unknown features {features!r}; use {DIGITS} or {INCEPTION}")
    check_inception()
    from cleanfid.features import build_feature_extractor  # only for Inception: clean-fid loads slowly
    from cleanfid.resize import build_resizer

    model = build_feature_extractor(mode, device, use_dataparallel=False)
    return Extractor(f"inception-{mode}", model, build_resizer(mode), device)


def build_dinov2_extractor(repo: str | None = None, device=None) -> Extractor:
    """DINOv2 ViT-L/14 for FD_DINOv2 (local hub files only); it resizes inside, so images go in as they are."""
    return Extractor("dinov2-vitl14", load_dinov2(repo, device), _unchanged, device)


def _unchanged(img: np.ndarray) -> np.ndarray:
    return img


def resize_for_classifier(img: np.ndarray) -> np.ndarray:
    """The digits classifier reads 8x8; other sizes are resized (a rough proxy)."""
    if img.shape[:2] == (8, 8):
        return img
    return np.asarray(Image.fromarray(img).resize((8, 8), Image.BICUBIC))


def _as_rgb(img: np.ndarray) -> np.ndarray:
    """What clean-fid's loader makes of a PNG: Image.open(...).convert("RGB")."""
    return np.asarray(Image.fromarray(img).convert("RGB"))


def _to_tensor(img: np.ndarray):
    """clean-fid's ResizeDataset: uint8 -> ToTensor() * 255; float32 -> ToTensor()."""
    tensor = torchvision.transforms.ToTensor()(np.array(img))
    return tensor * 255 if img.dtype == np.uint8 else tensor


def stream_features(pixels: np.ndarray, extractor: Extractor, batch_size: int = 256) -> np.ndarray:
    """Features of uint8 images ([N, H, W] grey or [N, H, W, C]) the way clean-fid computes them from PNGs."""
    out = []
    for start in range(0, len(pixels), batch_size):
        batch = torch.stack([_to_tensor(extractor.resize(_as_rgb(img))) for img in pixels[start: start + batch_size]])
        with torch.no_grad():
            out.append(extractor.model(batch.to(extractor.device)).detach().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

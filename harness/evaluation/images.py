"""From samples to what is measured and shown: uint8 pixels (latents decoded by the VAE first), predicted digit
classes, and sample grids."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.latents import decode_latents, load_vae
from .classifier import CleanFidDigitsExtractor


def to_uint8(images) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W] (C = 1) or [N, H, W, C]."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().numpy().astype(np.uint8)
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


def latent_decoder(data):
    """The VAE that turns latents into images (None for pixel data); a local folder, the HF cache, or tiny-random."""
    return load_vae(data.vae) if data.is_latent else None


def pixels_of(images, sigma_data: float, vae=None) -> np.ndarray:
    """uint8 pixels of data-space samples: latents (vae given) go through the VAE's decoder first."""
    if vae is not None:
        images = decode_latents(vae, images, sigma_data)
    return to_uint8(images)


def classify(images_uint8: np.ndarray, classifier) -> np.ndarray:
    """Predicted class of each sample, read from the same uint8 pixels that the PNGs hold."""
    x = torch.from_numpy(images_uint8).float()
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    with torch.no_grad():
        return classifier(CleanFidDigitsExtractor.to_classifier_input(x)).argmax(1).numpy()


def write_grid(images_uint8: np.ndarray, path: Path, rows: int, cols: int, scale: int | None = None) -> None:
    """Images in a rows x cols grid, each enlarged (nearest) to at least 32 pixels: 8x8 digits 4x, larger ones not."""
    h, w = images_uint8.shape[1:3]
    scale = scale or max(1, 32 // max(h, w))
    grid = np.zeros((rows * (h + 1), cols * (w + 1)) + images_uint8.shape[3:], np.uint8)
    for i, img in enumerate(images_uint8[: rows * cols]):
        r, c = divmod(i, cols)
        grid[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = img
    pic = Image.fromarray(grid)
    pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST).save(path)


def grid_indices(per_class: int, num_classes: int, count: int) -> tuple[list[int], int, int]:
    """Up to 10 samples of each of the first 10 classes, one column per class (10 x 10 unconditional)."""
    if num_classes:
        rows, cols = min(per_class, 10), min(num_classes, 10)
        return [c * per_class + r for r in range(rows) for c in range(cols)], rows, cols
    shown = min(count, 100)
    return list(range(shown)), -(-shown // 10), 10

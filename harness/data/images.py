"""Data sets held in memory as tensors in [-1, 1]: sklearn's 8x8 digits, a folder of same-size PNG images, or
smooth synthetic images of a given shape."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@dataclass
class ImageData:
    images: torch.Tensor  # [N, C, H, W] in [-1, 1]
    labels: torch.Tensor | None  # [N] class indices, or None when unconditional
    num_classes: int

    @property
    def shape(self):
        return tuple(self.images.shape[1:])

    def to(self, device) -> "ImageData":
        labels = self.labels.to(device) if self.labels is not None else None
        return ImageData(self.images.to(device), labels, self.num_classes)


def load_digits_data() -> ImageData:
    """1797 real handwritten digits, values 0..16 mapped to value / 8 - 1."""
    from sklearn.datasets import load_digits  # sklearn loads slowly: only the digits need it

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    return ImageData(images, torch.tensor(digits.target, dtype=torch.long), 10)


def _read_labels(path: Path, count: int) -> list[int]:
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} not found; give one class index per line, one line per image")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != count:
        raise ValueError(f"labels file {path} has {len(lines)} lines but the folder has {count} images; "
                         "give one class index per image, in sorted file-name order")
    try:
        return [int(line) for line in lines]
    except ValueError:
        raise ValueError(f"labels file {path} must hold one integer class index per line") from None


def load_image_folder(path: str, labels: str | None = None) -> ImageData:
    """Every *.png in `path` (sorted by name), all the same size; grayscale stays 1 channel, else RGB."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} not found; point data.path at a folder of PNG images")
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no *.png images in {folder}; the folder data set reads PNG files only: put PNG "
                                "images there or point data.path at a folder of PNGs")
    arrays = []
    for f in files:  # one file open at a time: folders larger than the open-file limit must load too
        with Image.open(f) as pic:
            arrays.append(np.asarray(pic.convert("L" if pic.mode in ("L", "1") else "RGB")))
    if len({a.ndim for a in arrays}) > 1:  # a mix of grey and colour files: make them all RGB
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    mode = "L" if arrays[0].ndim == 2 else "RGB"
    sizes = {a.shape for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"images in {folder} differ in size ({sorted(sizes)[:3]}); resize them to one size first")
    stack = np.stack(arrays).astype(np.float32)
    stack = stack[:, None] if mode == "L" else stack.transpose(0, 3, 1, 2)
    images = torch.from_numpy(stack) / 127.5 - 1.0
    if labels is None:
        return ImageData(images, None, 0)
    classes = torch.tensor(_read_labels(Path(labels), len(files)), dtype=torch.long)
    if classes.min() < 0:
        raise ValueError(f"labels file {labels} has a negative class index; use 0..K-1")
    return ImageData(images, classes, int(classes.max()) + 1)


def synthetic_data(shape, num_classes: int, count: int, seed: int = 0) -> ImageData:
    """Smooth random images of a recipe's shape in [-1, 1] (for --smoke runs, where the real data set is absent):
    low-resolution noise upsampled and squashed, so they have structure at every scale, not white noise."""
    g = torch.Generator().manual_seed(seed)
    channels, height, width = shape
    coarse = torch.randn(count, channels, max(1, height // 4), max(1, width // 4), generator=g)
    images = torch.tanh(torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear"))
    labels = torch.randint(num_classes, (count,), generator=g) if num_classes else None
    return ImageData(images, labels, num_classes)

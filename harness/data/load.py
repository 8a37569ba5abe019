"""The data set a recipe's `data:` section names: loaded, or only its shape (for planning, without the data)."""
from pathlib import Path

from PIL import Image

from .images import ImageData, load_digits_data, load_image_folder, synthetic_data
from .prepared import PREPARED_DATASETS, load_prepared

DIGITS_SHAPE = ((1, 8, 8), 10)  # sklearn's 8x8 digits, 10 classes


def load_data(config, draw_latents: bool = False) -> ImageData:
    """The data set of a `data:` section (without labels where it says class_conditional: false). Latents stored as
    VAE posteriors are read as their means, or with `draw_latents` (training) as a fresh draw per read (EDM2)."""
    data = _load_images(config, draw_latents)
    return data if config.class_conditional else ImageData(data.images, None, 0)


def _load_images(config, draw_latents: bool) -> ImageData:
    if config.name == "digits":
        return load_digits_data()
    if config.name == "synthetic":
        return synthetic_data(tuple(config.shape), config.num_classes, config.count)
    if config.name == "folder":
        return load_image_folder(config.path, config.labels)
    return load_prepared(config.prepared_path(), config.name, draw_latents)


def data_shape(config) -> tuple[tuple[int, ...], int]:
    """([C, H, W], number of classes) of a `data:` section, without loading the data set."""
    shape, classes = _shape(config)
    return shape, classes if config.class_conditional else 0


def _shape(config) -> tuple[tuple[int, ...], int]:
    if config.name == "digits":
        return DIGITS_SHAPE
    if config.name in PREPARED_DATASETS:
        shape, classes = PREPARED_DATASETS[config.name]
        return tuple(shape), classes
    if config.name == "synthetic":
        return tuple(config.shape), config.num_classes
    return _folder_shape(Path(config.path), config.labels)


def _folder_shape(folder: Path, labels: str | None) -> tuple[tuple[int, ...], int]:
    """Peek at the first PNG (the loader needs all images the same size) and the labels file."""
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise ValueError(f"data folder {folder} has no *.png images; plan needs one to know the image shape")
    with Image.open(files[0]) as pic:
        channels = 1 if pic.mode in ("L", "1") else 3
        shape = (channels, pic.height, pic.width)
    if labels is None:
        return shape, 0
    classes = [int(line) for line in Path(labels).read_text().split()]
    return shape, max(classes) + 1 if classes else 0

"""`scm-bench prepare`: turn a CIFAR-10 or ImageNet download into a prepared data set (the format:
harness/data/prepared.py) that training memory-maps."""
import os
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from scm.trigflow import SIGMA_DATA

from ..data.latents import DEFAULT_VAE, LATENT_MEAN, LATENT_STD, encode_posterior, load_vae
from ..data.prepared import IMAGES, LABELS, META, partial_path
from ..store import ArrayUnpickler, write_json

DATASETS = ("cifar10", "imagenet64", "imagenet512-latents")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_HINT = (f'download the "CIFAR-10 python version" (cifar-10-python.tar.gz) from {CIFAR_URL} '
              'and pass it with --source')
IMAGENET_HINT = ("pass --source the ImageNet training folder: SOURCE/<class folder, e.g. n01440764>/*.JPEG "
                 "(ILSVRC2012_img_train.tar with each class tar extracted into its own folder)")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


# ---- writing a prepared folder -------------------------------------------------------------------------------------

def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _check_target(out: Path, overwrite: bool) -> None:
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it, "
                              "or choose another --out")


def _publish(partial: Path, out: Path) -> None:
    """Move the finished folder to OUT; an old OUT (overwrite) is deleted only once the new one is in place."""
    old = out.with_name(out.name + ".old")
    _remove(old)
    if out.exists() or out.is_symlink():
        os.replace(out, old)
    os.replace(partial, out)
    _remove(old)


def _progress(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=quiet)


def _write_prepared(out: Path, meta: dict, dtype, labels, batches, overwrite: bool, quiet: bool) -> Path:
    """Fill OUT.partial with `batches` (consecutive arrays of images, meta["count"] in all), then rename it to OUT."""
    count, partial = meta["count"], partial_path(out)
    _remove(partial)  # what an earlier, interrupted prepare left behind
    partial.mkdir(parents=True)
    try:
        # A memory map on disk: ImageNet never has to fit in memory, only one batch at a time.
        channels = meta["shape"][0] * (2 if meta.get("posterior") else 1)  # posteriors: mean and std channels
        images = np.lib.format.open_memmap(partial / IMAGES, mode="w+", dtype=dtype,
                                           shape=(count, channels, *meta["shape"][1:]))
        filled = 0
        with _progress(quiet) as progress:
            task = progress.add_task(f"prepare {meta['name']}", total=count)
            for batch in batches:
                images[filled:filled + len(batch)] = batch
                filled += len(batch)
                progress.advance(task, len(batch))
        if filled != count:
            raise RuntimeError(f"prepare wrote {filled} images but expected {count}; this is a bug, please report it")
        images.flush()
        del images
        np.save(partial / LABELS, np.asarray(labels, dtype=np.int64))
        write_json(partial / META, meta)
        _check_target(out, overwrite)  # another prepare may have finished OUT meanwhile
        _publish(partial, out)
    except BaseException:  # Ctrl-C too: leave nothing but the untouched old OUT
        _remove(partial)
        raise
    return out


# ---- CIFAR-10 ------------------------------------------------------------------------------------------------------

def _read_cifar_batch(file, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images uint8 [n, 3, 32, 32] (rows are R, G, B planes of 32x32) and labels [n]."""
    try:
        batch = ArrayUnpickler(file, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as error:  # a foreign or damaged pickle fails in many ways; all mean "not a CIFAR-10 batch"
        raise ValueError(f"{where} is not a CIFAR-10 python batch ({type(error).__name__}); {CIFAR_HINT}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),) or \
            (len(labels) and not 0 <= labels.min() <= labels.max() <= 9):
        raise ValueError(f"{where} does not hold [n, 3072] images with labels 0..9; {CIFAR_HINT}")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_from_folder(folder: Path) -> list:
    missing = [name for name in CIFAR_BATCHES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} has no {missing[0]}, so it is not the extracted cifar-10-batches-py folder; "
                         f"{CIFAR_HINT}")
    batches = []
    for name in CIFAR_BATCHES:
        with open(folder / name, "rb") as file:
            batches.append(_read_cifar_batch(file, str(folder / name)))
    return batches


def _cifar_from_archive(archive: Path) -> list:
    found = {}
    try:
        # Stream mode: one pass through the gzip, reading only the five training batches, nothing extracted to disk.
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                name = PurePosixPath(member.name).name
                if member.isfile() and name in CIFAR_BATCHES and name not in found:
                    found[name] = _read_cifar_batch(tar.extractfile(member), f"{archive}:{member.name}")
                if len(found) == len(CIFAR_BATCHES):
                    break
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(f"{archive} is not the CIFAR-10 python archive ({error}); {CIFAR_HINT}") from None
    missing = [name for name in CIFAR_BATCHES if name not in found]
    if missing:
        raise ValueError(f"{archive} has no {missing[0]}, so it is not the CIFAR-10 python archive; {CIFAR_HINT}")
    return [found[name] for name in CIFAR_BATCHES]


def _read_cifar(source: Path) -> list:
    if not source.exists():
        raise FileNotFoundError(f"CIFAR-10 source {source} not found; {CIFAR_HINT}")
    if not source.is_dir():
        return _cifar_from_archive(source)
    nested = source / "cifar-10-batches-py"  # the folder the archive extracts into
    return _cifar_from_folder(nested if nested.is_dir() else source)


def prepare_cifar10(source: Path, out: Path, overwrite: bool = False, quiet: bool = False) -> Path:
    """The 50000 CIFAR-10 training images, uint8 [N, 3, 32, 32], 10 classes."""
    source, out = Path(source), Path(out)
    _check_target(out, overwrite)
    batches = _read_cifar(source)
    labels = np.concatenate([labels for _, labels in batches])
    meta = {"name": "cifar10", "kind": "pixels", "shape": [3, 32, 32], "count": len(labels), "num_classes": 10,
            "source": str(source.resolve())}
    return _write_prepared(out, meta, np.uint8, labels, (images for images, _ in batches), overwrite, quiet)


# ---- ImageNet ------------------------------------------------------------------------------------------------------

def _class_folders(source: Path) -> list[Path]:
    if not source.is_dir():
        raise FileNotFoundError(f"ImageNet source {source} not found; {IMAGENET_HINT}")
    folders = sorted(path for path in source.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not folders:
        raise ValueError(f"{source} has no class folders; {IMAGENET_HINT}")
    return folders


def imagenet_images(source: Path) -> list[tuple[Path, int]]:
    """(image path, class index) for every jpg / jpeg / png; classes are the sorted class folder names."""
    source = Path(source)
    items = [(path, label) for label, folder in enumerate(_class_folders(source))
             for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    if not items:
        raise ValueError(f"the class folders in {source} hold no .jpg / .jpeg / .png images; {IMAGENET_HINT}")
    return items


def center_crop(image, resolution: int):
    """ADM / EDM preprocessing: RGB, box-halve while the short side >= 2x resolution, bicubic resize to short side
    = resolution, then the central resolution x resolution square."""
    from PIL import Image

    image = image.convert("RGB")
    while min(image.size) >= 2 * resolution:  # big downscales in box-filtered halvings: bicubic alone would alias
        image = image.resize((image.width // 2, image.height // 2), Image.BOX)
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.BICUBIC)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def _load_crop(path: Path, resolution: int) -> np.ndarray:
    """One image file -> uint8 [3, resolution, resolution]."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            crop = center_crop(image, resolution)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # how PIL reports bad files
        raise ValueError(f"cannot read image {path} ({error}); delete or replace that file and run prepare "
                         "again") from None
    return np.asarray(crop).transpose(2, 0, 1)


def _crop_batches(paths: list[Path], resolution: int, batch_size: int):
    """uint8 [B, 3, R, R] batches in path order. Threads, since PIL decodes and resizes without holding the GIL;
    the next batch decodes while the caller writes or encodes this one."""
    chunks = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        def submit(index):
            return [pool.submit(_load_crop, path, resolution) for path in chunks[index]] if index < len(chunks) else []

        pending = submit(0)
        for index in range(len(chunks)):
            ready, pending = pending, submit(index + 1)
            yield np.stack([future.result() for future in ready])


def _check_positive(value: int, option: str) -> None:
    if value < 1:
        raise ValueError(f"{option} must be a positive integer, got {value}")


def prepare_imagenet64(source: Path, out: Path, resolution: int = 64, overwrite: bool = False,
                       quiet: bool = False) -> Path:
    """ImageNet training images center-cropped to uint8 [N, 3, resolution, resolution]; one class per folder."""
    source, out = Path(source), Path(out)
    _check_target(out, overwrite)
    _check_positive(resolution, "--resolution")
    num_classes = len(_class_folders(source))
    paths, labels = zip(*imagenet_images(source))
    meta = {"name": "imagenet64", "kind": "pixels", "shape": [3, resolution, resolution], "count": len(paths),
            "num_classes": num_classes, "source": str(source.resolve())}
    return _write_prepared(out, meta, np.uint8, labels, _crop_batches(list(paths), resolution, 256), overwrite,
                           quiet)


def _vae_model(vae, device):
    """(the AutoencoderKL, the name dataset.json records) from a name / path or an already loaded model."""
    if isinstance(vae, (str, Path)):
        import torch

        return load_vae(str(vae), device or ("cuda" if torch.cuda.is_available() else "cpu")), str(vae)
    model = vae.to(device) if device else vae
    return model, vae.config.get("_name_or_path") or f"{type(vae).__name__} (in memory)"


def _encoded_batches(model, pixel_batches, sigma_data: float):
    import torch

    for pixels in pixel_batches:
        images = torch.from_numpy(pixels).float() / 127.5 - 1.0
        yield encode_posterior(model, images, sigma_data).cpu().numpy().astype(np.float16)


def prepare_imagenet512_latents(source: Path, out: Path, vae=DEFAULT_VAE, resolution: int = 512, batch_size: int = 32,
                                device=None, overwrite: bool = False, quiet: bool = False) -> Path:
    """ImageNet center-cropped at `resolution`, encoded by the SD VAE and normalized as in sCM (App. G.1): each
    latent's posterior (mean and std, as EDM2 keeps them), float16 [N, 8, resolution / 8, resolution / 8].
    `vae`: a local folder, a cached hub id, or an AutoencoderKL."""
    source, out = Path(source), Path(out)
    _check_target(out, overwrite)
    _check_positive(batch_size, "batch_size")
    num_classes = len(_class_folders(source))
    model, vae_name = _vae_model(vae, device)  # before reading any image: a missing VAE fails at once
    factor = 2 ** (len(model.config.block_out_channels) - 1)  # the VAE's downsampling, 8 for SD
    if resolution < factor or resolution % factor:
        raise ValueError(f"--resolution {resolution} must be a positive multiple of {factor}, the VAE's downsampling")
    paths, labels = zip(*imagenet_images(source))
    side = resolution // factor
    meta = {"name": "imagenet512-latents", "kind": "latents", "shape": [model.config.latent_channels, side, side],
            "count": len(paths), "num_classes": num_classes, "source": str(source.resolve()), "vae": vae_name,
            "latent_mean": list(LATENT_MEAN), "latent_std": list(LATENT_STD), "sigma_data": SIGMA_DATA,
            "resolution": resolution, "posterior": True}
    batches = _encoded_batches(model, _crop_batches(list(paths), resolution, batch_size), SIGMA_DATA)
    return _write_prepared(out, meta, np.float16, labels, batches, overwrite, quiet)


# ---- the command ---------------------------------------------------------------------------------------------------

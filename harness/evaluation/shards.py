"""The features of every sample of one setting, shard by shard: a finished shard's files are kept and skipped, so
an evaluation resumes; shards are dealt out over the tasks of a generation array and, inside each, over the
data-parallel ranks, and the evaluation itself fills in whatever is still missing."""
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import store
from ..compute import Ranks
from .features import stream_features
from .generate import generate, shard_ranges
from .images import classify, pixels_of


@dataclass
class Sampler:
    """What every shard of an evaluation is made with: the method and its network, the data's shape and labels,
    the recipe seed of the samples, and the tools that turn samples into features."""
    method: object
    net: object
    shape: tuple
    labels: object  # every sample's label (None: unconditional)
    sample_seed: int
    batch_size: int
    extractors: dict  # {file prefix: Extractor}; "features" is FID's
    vae: object = None
    classifier: object = None


def _save_array(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    store.write_bytes_atomic(path, buffer.getvalue())


def shard_file(folder: Path, prefix: str, start: int, end: int) -> Path:
    return folder / f"{prefix}-{start:07d}-{end:07d}.npy"


def _make_shard(sampler: Sampler, setting, folder: Path, start: int, end: int) -> None:
    images = generate(sampler.method, sampler.net, setting, range(start, end), sampler.labels, sampler.shape,
                      sampler.sample_seed, sampler.batch_size)
    pixels = pixels_of(images, sampler.method.sigma_data, sampler.vae)
    if sampler.classifier is not None:
        _save_array(shard_file(folder, "classes", start, end), classify(pixels, sampler.classifier))
    for prefix, extractor in sampler.extractors.items():
        _save_array(shard_file(folder, prefix, start, end), stream_features(pixels, extractor, sampler.batch_size))


def shard_features(sampler: Sampler, setting, folder: Path, count: int, shard_size: int, ranks: Ranks = Ranks(),
                   part: tuple[int, int] = (0, 1)) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Features in each extractor's space and predicted classes (for the digits) of the `count` samples of a
    setting. This task makes its share of the shards (`part` = (task, tasks) of a generation array, then the
    ranks); rank 0 of an evaluation (one part) then gathers every shard in seed order. Other callers get nothing."""
    shards = shard_ranges(count, shard_size)
    task, tasks = part
    for start, end in shards[task * ranks.world_size + ranks.rank::tasks * ranks.world_size]:
        if not all(shard_file(folder, prefix, start, end).is_file() for prefix in sampler.extractors):
            _make_shard(sampler, setting, folder, start, end)
    if not ranks.is_main or tasks > 1:
        return {}, None
    paths = [shard_file(folder, prefix, a, b) for prefix in sampler.extractors for a, b in shards]
    while not all(p.is_file() for p in paths):  # the other ranks' shards
        time.sleep(1.0)
    feats = {prefix: np.concatenate([np.load(shard_file(folder, prefix, a, b)) for a, b in shards])
             for prefix in sampler.extractors}
    classes = (np.concatenate([np.load(shard_file(folder, "classes", a, b)) for a, b in shards])
               if sampler.classifier is not None else None)
    return feats, classes

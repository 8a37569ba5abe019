"""Reference statistics for FID, KID and FD_DINOv2: from a named file (an .npz, clean-fid's statistics, or what
`scm-bench refs import` made) or computed from the data set, streamed in chunks and cached per data set and feature
extractor; and the pre-flight check that a named file exists."""
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import store
from ..recipe.jobs import config_hash, EvalJob
from .features import stream_features
from .images import pixels_of
from .metrics import feature_statistics, fid_from_features

# reference features kept for KID and precision/recall (a seeded random subset of larger data sets); 50k is also
# the real side of the precision/recall protocol (precision_recall.MAX_FEATURES)
KID_REFERENCE_FEATURES = 50_000
REFERENCE_CHUNK = 4096  # images per chunk when streaming the real data through the extractor


def _reference_ready(folder: Path) -> bool:
    return (folder / "reference.json").is_file() and (folder / "stats.npz").is_file()


def _real_pixels(job: EvalJob, data, vae, start: int, end: int) -> np.ndarray:
    return pixels_of(data.images[start:end], job.train.sigma_data, vae)  # a tensor, or prepared images from disk


def _statistics_hash(mu, sigma) -> str:
    return hashlib.sha256(np.ascontiguousarray(mu, np.float64).tobytes()
                          + np.ascontiguousarray(sigma, np.float64).tobytes()).hexdigest()[:12]


def cleanfid_reference_file(reference: str, resolution: int) -> Path:
    """'cifar10-train-legacy_tensorflow' -> clean-fid's statistics file cifar10_legacy_tensorflow_train_32.npz."""
    import cleanfid

    name, split, mode = reference.split("-", 2)
    return Path(cleanfid.__file__).parent / "stats" / f"{name}_{mode}_{split}_{resolution}.npz".lower()


def check_reference(evaluation, shape) -> None:
    """Fail before submitting when the recipe names reference statistics that are not on this machine."""
    ref = evaluation.reference
    if ref is None:
        return
    if ref.endswith(".npz"):
        if not Path(ref).is_file():
            raise FileNotFoundError(f"evaluation.reference {ref} not found; give an .npz with mu and sigma, or leave "
                                    "it unset to compute statistics from the data set")
        return
    if ref.count("-") < 2:
        raise ValueError(f"evaluation.reference {ref!r}: expected a path to an .npz or a clean-fid name such as "
                         "cifar10-train-legacy_tensorflow")
    path = cleanfid_reference_file(ref, shape[-1])
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {path} not found; on a machine with internet download "
                                f"https://www.cs.cmu.edu/~clean-fid/stats/{path.name} and copy it there")


def _load_reference_file(path: Path, suffix: str = "") -> dict:
    """mu, sigma (and feats for KID) of a statistics file; suffix "_dinov2" reads FD_DINOv2's (refs import)."""
    with np.load(path) as stats:
        mu, sigma = stats["mu" + suffix], stats["sigma" + suffix]
        feats = stats["feats" + suffix] if "feats" + suffix in stats.files else None
    return {"mu": mu, "sigma": sigma, "feats": feats, "count": None, "real_vs_real_half_fid": None,
            "source": str(path), "hash": _statistics_hash(mu, sigma)}


def _reference_file(job: EvalJob, data, suffix: str) -> Path | None:
    """The statistics file the recipe names, if it holds statistics for this metric."""
    ref = job.evaluation.reference
    if ref is None:
        return None
    path = Path(ref) if ref.endswith(".npz") else cleanfid_reference_file(ref, data.shape[-1])
    if suffix:
        with np.load(path) as stats:
            return path if "mu" + suffix in stats.files else None
    return path


def reference_statistics(job: EvalJob, data, cache: Path, extractor, vae=None, suffix: str = "") -> dict:
    """mu, sigma (and features for KID) of the real data in the extractor's space, plus the real-vs-real floor (FID
    of one half against the other): from the named statistics file (suffix "_dinov2": its FD_DINOv2 statistics),
    or computed from the data set, streamed in chunks and cached per data set and extractor. Built in a private
    folder and renamed into place, so two jobs that start at once cannot mix their files."""
    named = _reference_file(job, data, suffix)
    if named is not None:
        return _load_reference_file(named, suffix)
    key = config_hash(job.train.data.model_dump(exclude_defaults=True), extractor.name)
    ref_dir = Path(cache) / f"{job.train.data.name}-{key}"
    if not _reference_ready(ref_dir):
        ref_dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=ref_dir.parent, prefix=f".{ref_dir.name}."))
        try:
            count = len(data.images)
            feats = np.concatenate([stream_features(_real_pixels(job, data, vae, a, min(a + REFERENCE_CHUNK, count)),
                                                    extractor) for a in range(0, count, REFERENCE_CHUNK)])
            half = np.random.default_rng(0).permutation(len(feats))
            floor = fid_from_features(feats[half[: len(feats) // 2]], feats[half[len(feats) // 2:]])
            mu, sigma = feature_statistics(feats)
            keep = np.sort(half[:KID_REFERENCE_FEATURES])
            np.savez(work / "stats.npz", mu=mu, sigma=sigma, feats=feats[keep])
            store.write_json(work / "reference.json", {"count": len(feats), "real_vs_real_half_fid": floor,
                                                       "features": extractor.name})
            if ref_dir.exists() and not _reference_ready(ref_dir):  # left half-built by a killed job
                shutil.rmtree(ref_dir, ignore_errors=True)
            try:
                work.rename(ref_dir)
            except OSError:
                if not _reference_ready(ref_dir):  # not another job's finished statistics: a real failure
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    info = store.read_json(ref_dir / "reference.json")
    return {**_load_reference_file(ref_dir / "stats.npz"), "count": info["count"],
            "real_vs_real_half_fid": info["real_vs_real_half_fid"], "source": str(ref_dir)}

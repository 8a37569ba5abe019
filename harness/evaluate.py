"""Evaluation of a finished stage: samples at each NFE, FID in the digits classifier's feature space via
clean-fid's feature pipeline, class accuracy of the samples, a sample grid per setting."""
import shutil
import time
from pathlib import Path

import numpy as np

from . import store
from .metrics import feature_statistics, fid_from_features, frechet_distance
from .recipe import Recipe, config_hash

FEATURE_EXTRACTOR = "digits-classifier-64d"


def to_uint8(images) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W] (C = 1) or [N, H, W, C]."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().numpy().astype(np.uint8)
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


def resize_for_classifier(img: np.ndarray) -> np.ndarray:
    """clean-fid resize hook: the digits classifier reads 8x8; other sizes are resized (a rough proxy)."""
    if img.shape[:2] == (8, 8):
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((8, 8), Image.BICUBIC))


def write_pngs(images_uint8: np.ndarray, folder: Path) -> None:
    """Replace `folder` with one PNG per image, written aside first so a crash leaves no half folder."""
    from PIL import Image

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, img in enumerate(images_uint8):
        Image.fromarray(img).save(tmp / f"{i:06d}.png")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def write_grid(images_uint8: np.ndarray, path: Path, rows: int, cols: int, scale: int = 4) -> None:
    from PIL import Image

    h, w = images_uint8.shape[1:3]
    grid = np.zeros((rows * (h + 1), cols * (w + 1)) + images_uint8.shape[3:], np.uint8)
    for i, img in enumerate(images_uint8[: rows * cols]):
        r, c = divmod(i, cols)
        grid[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = img
    pic = Image.fromarray(grid)
    pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST).save(path)


def folder_features(folder: Path, extractor) -> np.ndarray:
    import torch
    from cleanfid import fid as cleanfid

    return cleanfid.get_folder_features(str(folder), model=extractor, num_workers=0, batch_size=512,
                                        device=torch.device("cpu"), mode="clean",
                                        custom_fn_resize=resize_for_classifier, verbose=False)


def classify(images_uint8: np.ndarray, classifier) -> np.ndarray:
    """Predicted class of each sample, read from the same uint8 pixels that the PNGs hold."""
    import torch

    x = torch.from_numpy(images_uint8).float()
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).mean(1, keepdim=True)
    with torch.no_grad():
        return classifier(x / 127.5 - 1).argmax(1).numpy()


def reference_statistics(recipe: Recipe, data, runs_root: Path, extractor) -> dict:
    """Features of the real data (cached per data set), and the real-vs-real floor: FID of one half vs the other."""
    ref_dir = Path(runs_root) / "_reference" / f"{recipe.data.name}-{config_hash(recipe.data.model_dump())}"
    cached = store.read_json(ref_dir / "reference.json")
    if cached and (ref_dir / "stats.npz").is_file():
        stats = np.load(ref_dir / "stats.npz")
        return {**cached, "mu": stats["mu"], "sigma": stats["sigma"]}
    write_pngs(to_uint8(data.images), ref_dir / "images")
    feats = folder_features(ref_dir / "images", extractor)
    mu, sigma = feature_statistics(feats)
    half = np.random.default_rng(0).permutation(len(feats))
    floor = fid_from_features(feats[half[: len(feats) // 2]], feats[half[len(feats) // 2:]])
    np.savez(ref_dir / "stats.npz", mu=mu, sigma=sigma)
    info = {"count": len(feats), "real_vs_real_half_fid": floor, "features": FEATURE_EXTRACTOR}
    store.write_json(ref_dir / "reference.json", info)
    return {**info, "mu": mu, "sigma": sigma}


def sample_settings(recipe: Recipe, method: str) -> list[tuple[str, int]]:
    """(sampler, steps) pairs: the teacher's ODE solver, or consistency sampling at each NFE."""
    if method == "teacher":
        return [(recipe.evaluation.teacher_sampler, recipe.evaluation.teacher_steps)]
    return [("consistency", n) for n in recipe.evaluation.consistency_nfe]


def generate(net, recipe: Recipe, shape, labels, sampler: str, steps: int):
    """Samples from fixed noise (the same z for every method and NFE, so grids compare at a glance)."""
    import torch
    from scm.sampling import consistency_sample, guided, teacher_sample

    ev, sd = recipe.evaluation, recipe.sigma_data
    n = len(labels) if labels is not None else ev.samples_per_class
    z = torch.randn((n, *shape), generator=torch.Generator().manual_seed(recipe.seed + 1000)) * sd
    step_rng = torch.Generator().manual_seed(recipe.seed + 2000)
    outs, nfe = [], 0
    for start in range(0, n, ev.batch_size):
        batch_labels = labels[start: start + ev.batch_size] if labels is not None else None
        F = guided(net, batch_labels, ev.guidance)
        zb = z[start: start + ev.batch_size]
        if sampler == "consistency":
            x, nfe = consistency_sample(F, zb, steps, sigma_data=sd, generator=step_rng)
        else:
            x, nfe = teacher_sample(F, zb, sampler, steps, sd)
        outs.append(x)
    return torch.cat(outs), nfe


def evaluate_stage(job: dict, checkpoint: str) -> list[dict]:
    """Metrics rows for one trained stage; cached in metrics.json for that checkpoint."""
    import torch
    from .classifier import CleanFidDigitsExtractor, load_digits_classifier
    from .data import load_data
    from .train import load_ema_network

    torch.set_num_threads(job["threads"])
    recipe, method, run_dir = Recipe.model_validate(job["recipe"]), job["method"], Path(job["run_dir"])
    cached = store.read_json(run_dir / "metrics.json")
    if cached and cached.get("checkpoint") == checkpoint:
        return cached["rows"]
    store.write_json(run_dir / "progress.json", {**store.read_json(run_dir / "progress.json", {}),
                                                 "state": "evaluating"})
    data = load_data(recipe.data)
    classifier = load_digits_classifier()
    extractor = CleanFidDigitsExtractor(classifier)
    ref = reference_statistics(recipe, data, Path(job["runs_root"]), extractor)
    net = load_ema_network(recipe, Path(checkpoint), data.shape, data.num_classes)
    labels = (torch.arange(data.num_classes).repeat_interleave(recipe.evaluation.samples_per_class)
              if data.num_classes else None)
    train_seconds = store.load_checkpoint(Path(checkpoint))["elapsed"]
    rows = []
    for sampler, steps in sample_settings(recipe, method):
        start = time.time()
        images, nfe = generate(net, recipe, data.shape, labels, sampler, steps)
        sample_seconds = time.time() - start
        pixels = to_uint8(images)
        folder = run_dir / "samples" / f"nfe-{nfe}"
        write_pngs(pixels, folder)
        mu, sigma = feature_statistics(folder_features(folder, extractor))
        per_class = recipe.evaluation.samples_per_class
        grid_order = (np.arange(min(per_class, 10))[:, None] + per_class * np.arange(data.num_classes)[None]).ravel() \
            if labels is not None else np.arange(min(len(pixels), 100))
        write_grid(pixels[grid_order], run_dir / "samples" / f"grid-nfe-{nfe}.png",
                   rows=min(per_class, 10), cols=max(data.num_classes, 10))
        accuracy = (float((classify(pixels, classifier) == labels.numpy()).mean())
                    if labels is not None and recipe.data.name == "digits" else None)
        rows.append({"recipe": recipe.name, "job": run_dir.name, "method": method, "sampler": sampler,
                     "nfe": nfe, "fid": frechet_distance(mu, sigma, ref["mu"], ref["sigma"]),
                     "class_accuracy": accuracy, "num_samples": len(pixels), "reference_count": ref["count"],
                     "real_vs_real_half_fid": ref["real_vs_real_half_fid"], "features": FEATURE_EXTRACTOR,
                     "guidance": recipe.evaluation.guidance, "train_seconds": train_seconds,
                     "sample_seconds": sample_seconds, "checkpoint": Path(checkpoint).name,
                     "grid": str((run_dir / "samples" / f"grid-nfe-{nfe}.png").resolve())})
    store.write_json(run_dir / "metrics.json", {"checkpoint": checkpoint, "rows": rows})
    store.write_json(run_dir / "progress.json", {**store.read_json(run_dir / "progress.json", {}), "state": "done"})
    return rows


def run_job(job: dict) -> list[dict]:
    """The whole job of one stage: train (or resume) then evaluate. This is what the executor runs."""
    from .train import train_stage

    return evaluate_stage(job, train_stage(job))

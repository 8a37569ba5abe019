"""Evaluation of a finished stage: samples at each NFE, FID in the digits classifier's feature space via
clean-fid's feature pipeline, class accuracy of the samples, a sample grid per setting."""
import shutil
import tempfile
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
    from .classifier import CleanFidDigitsExtractor

    x = torch.from_numpy(images_uint8).float()
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    with torch.no_grad():
        return classifier(CleanFidDigitsExtractor.to_classifier_input(x)).argmax(1).numpy()


def _reference_ready(folder: Path) -> bool:
    return (folder / "reference.json").is_file() and (folder / "stats.npz").is_file()


def pixels_of(images, recipe: Recipe, vae=None) -> np.ndarray:
    """uint8 pixels of data-space samples: latents go through the VAE's decoder first."""
    if recipe.data.is_latent:
        from .latents import decode_latents

        images = decode_latents(vae, images, recipe.sigma_data)
    return to_uint8(images)


def latent_decoder(recipe: Recipe):
    """The VAE that turns latents into images (None for pixel data); a local folder, the HF cache, or tiny-random."""
    if not recipe.data.is_latent:
        return None
    from .latents import load_vae

    return load_vae(recipe.data.vae)


def reference_statistics(recipe: Recipe, data, runs_root: Path, extractor, vae=None) -> dict:
    """Features of the real data (cached per data set), and the real-vs-real floor: FID of one half vs the other.

    Built in a private folder and renamed into place, so two jobs that start at once cannot mix their files.
    """
    import torch

    ref_dir = Path(runs_root) / "_reference" / f"{recipe.data.name}-{config_hash(recipe.data.model_dump())}"
    if not _reference_ready(ref_dir):
        ref_dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=ref_dir.parent, prefix=f".{ref_dir.name}."))
        try:
            images = data.images if isinstance(data.images, torch.Tensor) else data.images[:]  # prepared: from disk
            write_pngs(pixels_of(images, recipe, vae), work / "images")
            feats = folder_features(work / "images", extractor)
            half = np.random.default_rng(0).permutation(len(feats))
            floor = fid_from_features(feats[half[: len(feats) // 2]], feats[half[len(feats) // 2:]])
            mu, sigma = feature_statistics(feats)
            np.savez(work / "stats.npz", mu=mu, sigma=sigma)
            store.write_json(work / "reference.json", {"count": len(feats), "real_vs_real_half_fid": floor,
                                                       "features": FEATURE_EXTRACTOR})
            if ref_dir.exists() and not _reference_ready(ref_dir):  # left half-built by a killed job
                shutil.rmtree(ref_dir, ignore_errors=True)
            try:
                work.rename(ref_dir)
            except OSError:
                if not _reference_ready(ref_dir):  # not another job's finished statistics: a real failure
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    with np.load(ref_dir / "stats.npz") as stats:
        return {**store.read_json(ref_dir / "reference.json"), "mu": stats["mu"], "sigma": stats["sigma"]}


def evaluation_key(recipe: Recipe) -> str:
    """Names the evaluation settings; metrics made under other settings are stale."""
    return config_hash(recipe.evaluation.model_dump(), recipe.seed)


def sample_settings(recipe: Recipe, method: str) -> list[tuple[str, int, float]]:
    """(sampler, steps, guidance): the teacher's ODE solver at its CFG scale, or consistency sampling at each NFE
    (at each of evaluation.student_guidance for a student that takes the scale as an input)."""
    ev = recipe.evaluation
    if method == "teacher":
        return [(ev.teacher_sampler, ev.teacher_steps, ev.guidance)]
    scales = ev.student_guidance if recipe.network.guidance_input and method == "scd" else [1.0]
    return [("consistency", n, s) for n in ev.consistency_nfe for s in scales]


def generate(net, recipe: Recipe, shape, labels, sampler: str, steps: int, guidance: float = 1.0):
    """Samples from fixed noise (the same z for every method and NFE, so grids compare at a glance).

    The teacher's sampler applies classifier-free guidance (two network evaluations per solver call, which the
    returned NFE counts); a student with a guidance input is told the scale instead (sCD distils the guided teacher).
    """
    import torch
    from scm.sampling import consistency_sample, guided, teacher_sample
    from .train import net_device

    ev, sd = recipe.evaluation, recipe.sigma_data
    told = sampler == "consistency" and getattr(net, "takes_guidance", False)
    cfg = guidance if sampler != "consistency" and labels is not None else 1.0
    n = len(labels) if labels is not None else ev.samples_per_class
    where = net_device(net)
    z = torch.randn((n, *shape), generator=torch.Generator().manual_seed(recipe.seed + 1000)) * sd  # same on any device
    step_rng = torch.Generator(device=where).manual_seed(recipe.seed + 2000)
    outs, nfe = [], 0
    for start in range(0, n, ev.batch_size):
        batch_labels = labels[start: start + ev.batch_size].to(where) if labels is not None else None
        F = (lambda x, t, y=batch_labels: net(x, t, y, guidance=guidance)) if told else guided(net, batch_labels, cfg)
        zb = z[start: start + ev.batch_size].to(where)
        if sampler == "consistency":
            x, nfe = consistency_sample(F, zb, steps, sigma_data=sd, generator=step_rng)
        else:
            x, nfe = teacher_sample(F, zb, sampler, steps, sd)
        outs.append(x.cpu())
    return torch.cat(outs), nfe * (2 if cfg != 1.0 else 1)


def _grid(pixels: np.ndarray, per_class: int, num_classes: int, path: Path) -> None:
    """Up to 10 samples per class, one column per class (10 x 10 for unconditional data)."""
    if num_classes:
        rows = min(per_class, 10)
        order = (np.arange(rows)[:, None] + per_class * np.arange(num_classes)[None]).ravel()
        write_grid(pixels[order], path, rows=rows, cols=num_classes)
    else:
        write_grid(pixels[:100], path, rows=min(10, -(-min(len(pixels), 100) // 10)), cols=10)


def _evaluate_setting(net, recipe, data, labels, setting, run_dir, extractor, classifier, ref, vae=None) -> dict:
    """Generate, write PNGs and a grid, then FID against the reference and class accuracy."""
    sampler, steps, guidance = setting
    start = time.time()
    images, nfe = generate(net, recipe, data.shape, labels, sampler, steps, guidance)
    sample_seconds = time.time() - start
    pixels = pixels_of(images, recipe, vae)
    told = sampler == "consistency" and getattr(net, "takes_guidance", False)
    name = f"nfe-{nfe}" + (f"-guidance-{guidance:g}" if told else "")
    folder = run_dir / "samples" / name
    write_pngs(pixels, folder)
    mu, sigma = feature_statistics(folder_features(folder, extractor))
    grid = run_dir / "samples" / f"grid-{name}.png"
    _grid(pixels, recipe.evaluation.samples_per_class, data.num_classes, grid)
    accuracy = (float((classify(pixels, classifier) == labels.numpy()).mean())
                if labels is not None and recipe.data.name == "digits" else None)
    return {"sampler": sampler, "nfe": nfe, "guidance": guidance,
            "fid": frechet_distance(mu, sigma, ref["mu"], ref["sigma"]),
            "class_accuracy": accuracy, "num_samples": len(pixels), "sample_seconds": sample_seconds,
            "grid": str(grid.resolve())}


def _metrics_key(job: dict, checkpoint: str) -> dict:
    stat = Path(checkpoint).stat()
    return {"checkpoint": checkpoint, "evaluation": evaluation_key(Recipe.model_validate(job["recipe"])),
            "stamp": [stat.st_size, stat.st_mtime_ns]}


def finished_rows(job: dict, checkpoint: str) -> list[dict] | None:
    """The job's metrics rows if this checkpoint was evaluated under these settings already, else None."""
    cached = store.read_json(Path(job["run_dir"]) / "metrics.json")
    return cached["rows"] if cached and cached.get("key") == _metrics_key(job, checkpoint) else None


def evaluate_stage(job: dict, checkpoint: str) -> list[dict]:
    """Metrics rows for one trained stage; cached in metrics.json for that checkpoint and these settings."""
    import torch
    from .classifier import CleanFidDigitsExtractor, load_digits_classifier
    from .data import load_data
    from .train import load_ema_network

    torch.set_num_threads(job["threads"])
    recipe, method, run_dir = Recipe.model_validate(job["recipe"]), job["method"], Path(job["run_dir"])
    cached = finished_rows(job, checkpoint)
    if cached is not None:
        return cached
    store.write_json(run_dir / "progress.json", {**store.read_json(run_dir / "progress.json", {}),
                                                 "state": "evaluating"})
    data = load_data(recipe.data)
    classifier = load_digits_classifier()
    extractor = CleanFidDigitsExtractor(classifier)
    vae = latent_decoder(recipe)
    ref = reference_statistics(recipe, data, Path(job["runs_root"]), extractor, vae)
    state = store.load_checkpoint(Path(checkpoint))
    net = load_ema_network(recipe, Path(checkpoint), data.shape, data.num_classes, state, method)
    labels = (torch.arange(data.num_classes).repeat_interleave(recipe.evaluation.samples_per_class)
              if data.num_classes else None)
    common = {"recipe": recipe.name, "job": run_dir.name, "method": method, "variant": job.get("variant", ""),
              "teacher_job": job.get("teacher", run_dir.name), "reference_count": ref["count"],
              "real_vs_real_half_fid": ref["real_vs_real_half_fid"], "features": FEATURE_EXTRACTOR,
              "train_seconds": state["elapsed"], "checkpoint": Path(checkpoint).name}
    rows = [{**common, **_evaluate_setting(net, recipe, data, labels, setting, run_dir, extractor, classifier, ref,
                                            vae)}
            for setting in sample_settings(recipe, method)]
    if method == "scd" and not recipe.network.guidance_input:  # it samples at the CFG scale it was distilled at
        rows = [{**row, "guidance": recipe.stages.scd.guidance} for row in rows]
    store.write_json(run_dir / "metrics.json", {"key": _metrics_key(job, checkpoint), "rows": rows})
    store.write_json(run_dir / "progress.json", {**store.read_json(run_dir / "progress.json", {}), "state": "done"})
    return rows


def run_job(job: dict):
    """What the executor runs: train a stage (kind "train", returns its final checkpoint) or evaluate its final
    checkpoint (kind "evaluate", returns metrics rows). A lock on the run folder refuses a second copy of the same
    job (two writers would interleave checkpoints); in a multi-task job only rank 0 holds it."""
    import fcntl
    from .train import train_stage

    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    kind = job.get("kind", "train")
    if kind not in ("train", "evaluate"):
        raise ValueError(f"unknown job kind {kind!r}; expected train or evaluate")
    if _task_rank() > 0:  # the other ranks of a data-parallel job: rank 0 holds the lock for them
        return train_stage(job)
    with open(run_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{run_dir.name} is already running in another process; wait for it or stop it") from None
        if kind == "train":
            return train_stage(job)
        steps = job["recipe"]["stages"][job["method"]]["steps"]
        final = store.checkpoint_path(run_dir, steps)
        if not final.is_file():
            raise FileNotFoundError(f"{run_dir.name}: no final checkpoint {final.name} to evaluate; train it first")
        return evaluate_stage(job, str(final))


def _task_rank() -> int:
    import submitit

    try:
        return submitit.JobEnvironment().global_rank
    except RuntimeError:  # called outside a submitit job
        return 0

"""Evaluation of a finished stage: samples at each setting (per-sample seeds, sharded, resumable), FID and KID in the
recipe's feature space (the digits classifier or clean-fid's Inception), class accuracy on the digits, and a sample
grid per setting. Metrics rows are long: one per (setting, metric)."""
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import store
from .metrics import feature_statistics, frechet_distance, kernel_distance
from .generate import Setting
from .recipe import Recipe, config_hash
from .train import diverged_record



def to_uint8(images) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W] (C = 1) or [N, H, W, C]."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().numpy().astype(np.uint8)
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


def write_grid(images_uint8: np.ndarray, path: Path, rows: int, cols: int, scale: int | None = None) -> None:
    """Images in a rows x cols grid, each enlarged (nearest) to at least 32 pixels: 8x8 digits 4x, larger ones not."""
    from PIL import Image

    h, w = images_uint8.shape[1:3]
    scale = scale or max(1, 32 // max(h, w))
    grid = np.zeros((rows * (h + 1), cols * (w + 1)) + images_uint8.shape[3:], np.uint8)
    for i, img in enumerate(images_uint8[: rows * cols]):
        r, c = divmod(i, cols)
        grid[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = img
    pic = Image.fromarray(grid)
    pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST).save(path)


def classify(images_uint8: np.ndarray, classifier) -> np.ndarray:
    """Predicted class of each sample, read from the same uint8 pixels that the PNGs hold."""
    import torch
    from .classifier import CleanFidDigitsExtractor

    x = torch.from_numpy(images_uint8).float()
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    with torch.no_grad():
        return classifier(CleanFidDigitsExtractor.to_classifier_input(x)).argmax(1).numpy()


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


def evaluation_key(recipe: Recipe, method: str) -> str:
    """Names the evaluation settings of a method's job; metrics made under other settings are stale."""
    # shards and ranks change how the work is split, never a sample (per-sample seeds); only students are
    # evaluated during training
    split = {"shard_size", "ranks", "array_tasks"} | ({"during_training"} if method == "teacher" else set())
    return config_hash(recipe.evaluation.model_dump(exclude=split, exclude_defaults=True), recipe.seed)


def sample_settings(recipe: Recipe, method: str) -> list[tuple[str, int, float]]:
    """(sampler, steps, guidance): the teacher's ODE solver at its CFG scale, or consistency sampling at each NFE
    (at each of evaluation.student_guidance for an sCD student that takes the scale as an input)."""
    ev = recipe.evaluation
    if method == "teacher":
        return [(ev.teacher_sampler, steps, ev.guidance) for steps in ev.teacher_step_list]
    scales = ev.student_guidance if recipe.network.guidance_input and method == "scd" else [1.0]
    return [("consistency", n, s) for n in ev.consistency_nfe for s in scales]


def _grid_indices(per_class: int, num_classes: int, count: int) -> tuple[list[int], int, int]:
    """Up to 10 samples of each of the first 10 classes, one column per class (10 x 10 unconditional)."""
    if num_classes:
        rows, cols = min(per_class, 10), min(num_classes, 10)
        return [c * per_class + r for r in range(rows) for c in range(cols)], rows, cols
    shown = min(count, 100)
    return list(range(shown)), -(-shown // 10), 10


def _save_array(path: Path, array: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    store.write_bytes_atomic(path, buffer.getvalue())


def _shard_file(folder: Path, prefix: str, start: int, end: int) -> Path:
    return folder / f"{prefix}-{start:07d}-{end:07d}.npy"


def shard_features(net, recipe: Recipe, data, labels, setting, folder: Path, extractors: dict, vae, ranks=None,
                   classifier=None, part: tuple[int, int] = (0, 1)) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Features in each extractor's space ({file prefix: Extractor}; "features" is FID's) and predicted classes
    (for the digits) of every sample of a setting, shard by shard. A finished shard's files are kept and skipped,
    so evaluation resumes. The shards are dealt out over `part` = (task, tasks) of a generation array and, inside
    each, over the data-parallel ranks; an evaluation job (one part) fills in whatever is still missing, so it
    never depends on the array having finished. Rank 0 of the evaluation gathers every shard in seed order; other
    callers return nothing."""
    from .distributed import Ranks
    from .features import stream_features
    from .generate import generate, shard_ranges

    ranks = ranks or Ranks()
    ev = recipe.evaluation
    count = len(labels) if labels is not None else ev.samples_per_class
    shards = shard_ranges(count, ev.shard_size)
    task, tasks = part
    for start, end in shards[task * ranks.world_size + ranks.rank::tasks * ranks.world_size]:
        if all(_shard_file(folder, prefix, start, end).is_file() for prefix in extractors):
            continue
        # every run of a recipe samples from the recipe's seeds, whatever its training seed: runs that differ in
        # training only are compared on the same noise (common random numbers)
        images = generate(net, setting, range(start, end), labels, data.shape, recipe.seed, recipe.sigma_data,
                          ev.batch_size)
        pixels = pixels_of(images, recipe, vae)
        if classifier is not None:
            _save_array(_shard_file(folder, "classes", start, end), classify(pixels, classifier))
        for prefix, extractor in extractors.items():
            _save_array(_shard_file(folder, prefix, start, end), stream_features(pixels, extractor, ev.batch_size))
    if not ranks.is_main or tasks > 1:
        return {}, None
    paths = [_shard_file(folder, prefix, a, b) for prefix in extractors for a, b in shards]
    while not all(p.is_file() for p in paths):  # the other ranks' shards
        time.sleep(1.0)
    feats = {prefix: np.concatenate([np.load(_shard_file(folder, prefix, a, b)) for a, b in shards])
             for prefix in extractors}
    classes = (np.concatenate([np.load(_shard_file(folder, "classes", a, b)) for a, b in shards])
               if classifier is not None else None)
    return feats, classes


def _setting(setting: tuple[str, int, float], takes_guidance: bool) -> Setting:
    """The Setting to sample with: the guidance scale goes to a student that takes it, or to the teacher's CFG."""
    sampler, steps, guidance = setting
    told = sampler == "consistency" and takes_guidance
    return Setting(sampler, steps, guidance if (told or sampler != "consistency") else 1.0, told)


def _evaluate_setting(net, recipe, data, labels, setting, samples: Path, extractors, classifier, refs, vae=None,
                      ranks=None) -> list[dict] | None:
    """Features of every sample (shards under samples/SETTING) -> FID, KID, FD_DINOv2 where asked (and class
    accuracy); a grid of fixed samples. Long rows."""
    from .generate import generate

    setting = _setting(setting, getattr(net, "takes_guidance", False))
    folder = samples / setting.name
    start = time.time()
    feats, classes = shard_features(net, recipe, data, labels, setting, folder, extractors, vae, ranks, classifier)
    if ranks is not None and not ranks.is_main:
        return None
    sample_seconds = time.time() - start
    count = len(feats["features"])
    indices, rows, cols = _grid_indices(recipe.evaluation.samples_per_class, data.num_classes, count)
    grid = samples / f"grid-{setting.name}.png"
    write_grid(pixels_of(generate(net, setting, indices, labels, data.shape, recipe.seed, recipe.sigma_data),
                         recipe, vae), grid, rows, cols)
    common = {"sampler": setting.sampler, "nfe": setting.nfe(labels is not None), "guidance": setting.guidance,
              "num_samples": count, "sample_seconds": sample_seconds, "grid": str(grid.resolve())}
    ref = refs["features"]
    metrics = {"fid": frechet_distance(*feature_statistics(feats["features"]), ref["mu"], ref["sigma"])}
    if ref.get("feats") is not None:
        metrics["kid"] = kernel_distance(feats["features"], ref["feats"])
    if "dinov2" in feats:
        metrics["fd_dinov2"] = frechet_distance(*feature_statistics(feats["dinov2"]), refs["dinov2"]["mu"],
                                                refs["dinov2"]["sigma"])
    if classes is not None:
        metrics["class_accuracy"] = float((classes == labels.numpy()).mean())
    return [{**common, "metric": name, "value": value} for name, value in metrics.items()]


def code_version() -> str:
    """The git commit of this code (with +dirty when the tree has changes), or "unknown"."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+dirty" if dirty else "")) or "unknown"


def _metrics_key(job: dict, checkpoint: str | None) -> dict:
    """What the rows were made from: the checkpoint (its size and time) or, for a diverged job, its record."""
    evaluation = evaluation_key(Recipe.model_validate(job["recipe"]), job["method"])
    if checkpoint is None:
        return {"checkpoint": None, "evaluation": evaluation, "diverged": diverged_record(Path(job["run_dir"]))}
    stat = Path(checkpoint).stat()
    return {"checkpoint": checkpoint, "evaluation": evaluation, "stamp": [stat.st_size, stat.st_mtime_ns]}


def finished_rows(job: dict, checkpoint: str | None) -> list[dict] | None:
    """The job's metrics rows if this checkpoint (None: the divergence) was evaluated under these settings
    already, else None."""
    cached = store.read_json(Path(job["run_dir"]) / "metrics.json")
    return cached["rows"] if cached and cached.get("key") == _metrics_key(job, checkpoint) else None


def diverged_rows(job: dict) -> list[dict]:
    """A diverged job's rows: every setting and metric it would have had, value NaN, marked diverged with the step
    and the term, so the report counts it and never shows a number for it."""
    recipe, method, run_dir = Recipe.model_validate(job["recipe"]), job["method"], Path(job["run_dir"])
    cached = finished_rows(job, None)
    if cached is not None:
        return cached
    record = diverged_record(run_dir)
    ev = recipe.evaluation
    metrics = ["fid", "kid"] + (["fd_dinov2"] if ev.fd_dinov2 else [])
    context = {"recipe": recipe.name, "variant": job.get("variant", ""), "job": run_dir.name,
               "teacher_job": job.get("teacher", run_dir.name), "method": method, "size": model_size(recipe, job),
               "seed": recipe.stage_seed(method), "checkpoint_step": record["step"], "features": ev.features,
               "code_version": code_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "intermediate": False, "diverged": True, "diverged_step": record["step"],
               "diverged_term": record["term"], "diverged_message": record["message"]}
    rows = []
    for setting in sample_settings(recipe, method):
        setting = _setting(setting, recipe.network.guidance_input and method == "scd")
        rows += [{**context, "sampler": setting.sampler, "nfe": setting.nfe(recipe.data.class_conditional),
                  "guidance": _reported_guidance(recipe, method, setting.guidance), "num_samples": 0,
                  "metric": metric, "value": float("nan")}
                 for metric in metrics]
    store.write_json(run_dir / "metrics.json", {"key": _metrics_key(job, None), "rows": rows})
    return rows


def _reported_guidance(recipe: Recipe, method: str, guidance: float):
    """An sCD student without a guidance input samples at the CFG scale it was distilled at: rows say that one."""
    return recipe.stages.scd.guidance if method == "scd" and not recipe.network.guidance_input else guidance


def model_size(recipe: Recipe, job: dict) -> str | None:
    """EDM2's S..XXL, or for other networks the entry of a sweep axis named `size` (e.g. size=w16), so a scaling
    sweep of any network reads as one in the report."""
    if recipe.network.size:
        return recipe.network.size
    swept = dict(part.split("=", 1) for part in job.get("variant", "").split(",") if "=" in part)
    return swept.get("size")


def _row_context(recipe: Recipe, job: dict, state: dict, checkpoint: str, net) -> dict:
    """What every metrics row of this job records besides its setting, metric, value and reference."""
    method, stage = job["method"], recipe.stage(job["method"])
    ema = (f"power sigma_rel={stage.ema.sigma_rel}" if stage.ema.kind == "power"
           else f"halflife {stage.ema.halflife_images:g} images")
    return {"recipe": recipe.name, "variant": job.get("variant", ""), "job": Path(job["run_dir"]).name,
            "teacher_job": job.get("teacher", Path(job["run_dir"]).name), "method": method,
            "size": model_size(recipe, job), "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "seed": recipe.stage_seed(method), "ema": ema, "checkpoint_step": int(state["step"]),
            "checkpoint": Path(checkpoint).name, "code_version": code_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "train_seconds": state["elapsed"],
            "diverged": False}


def _reference_context(ref: dict, extractor) -> dict:
    return {"reference": ref["source"], "reference_hash": ref["hash"], "reference_count": ref["count"],
            "real_vs_real_half_fid": ref["real_vs_real_half_fid"], "features": extractor.name}


def _extractors(recipe: Recipe, device) -> dict:
    """{shard file prefix: Extractor}: FID's features, and DINOv2's where FD_DINOv2 is asked for."""
    from .features import build_dinov2_extractor, build_extractor

    ev = recipe.evaluation
    extractors = {"features": build_extractor(ev.features, ev.fid_mode, device)}
    if ev.fd_dinov2:
        extractors["dinov2"] = build_dinov2_extractor(ev.dinov2_repo, device)
    return extractors


def _evaluation_inputs(job: dict):
    """Data, network and labels of the job's final checkpoint, as every generating task needs them."""
    import torch
    from .data import load_data
    from .train import load_ema_network

    recipe, checkpoint = Recipe.model_validate(job["recipe"]), job["checkpoint"]
    data = load_data(recipe.data)
    state = store.load_checkpoint(Path(checkpoint))
    net = load_ema_network(recipe, Path(checkpoint), data.shape, data.num_classes, state, job["method"])
    labels = (torch.arange(data.num_classes).repeat_interleave(recipe.evaluation.samples_per_class)
              if data.num_classes else None)
    return recipe, data, state, net, labels


def generate_part(job: dict, part: tuple[int, int]) -> list:
    """One task of a generation array: this part's shards of every setting, features saved; no metrics."""
    import torch
    from .classifier import load_digits_classifier
    from .distributed import init_ranks
    from .train import device

    torch.set_num_threads(job["threads"])
    recipe, data, state, net, labels = _evaluation_inputs(job)
    classifier = load_digits_classifier() if recipe.data.name == "digits" and data.num_classes else None
    extractors, vae, ranks = _extractors(recipe, device()), latent_decoder(recipe), init_ranks()
    for _, _, net, samples in _evaluated_networks(job, recipe, data, job["checkpoint"], state, net):
        for setting in sample_settings(recipe, job["method"]):
            setting = _setting(setting, getattr(net, "takes_guidance", False))
            shard_features(net, recipe, data, labels, setting, samples / setting.name, extractors, vae, ranks,
                           classifier, part)
    return []


def _evaluated_networks(job: dict, recipe: Recipe, data, checkpoint: str, state: dict, net):
    """(checkpoint, state, EMA network, samples folder) of the final checkpoint (state and net given), then for
    students those of each evaluation.during_training step (FID over training), loaded one at a time."""
    from .train import load_ema_network

    run_dir = Path(job["run_dir"])
    yield Path(checkpoint), state, net, run_dir / "samples"
    for step in recipe.evaluation.during_training if job["method"] != "teacher" else ():
        path = store.checkpoint_path(run_dir, step)
        earlier = store.load_checkpoint(path)
        yield (path, earlier, load_ema_network(recipe, path, data.shape, data.num_classes, earlier, job["method"]),
               run_dir / "samples" / f"step-{step:07d}")


def _checkpoint_rows(job: dict, recipe: Recipe, data, labels, checkpoint: Path, state: dict, net, samples: Path,
                     tools: tuple) -> list[dict]:
    """The rows of one checkpoint's EMA network at every setting (samples under `samples`); empty off rank 0.
    Rows of a checkpoint before the stage's last step are marked intermediate (FID over training)."""
    extractors, classifier, refs, vae, ranks = tools
    rows = []
    for setting in sample_settings(recipe, job["method"]):
        rows += _evaluate_setting(net, recipe, data, labels, setting, samples, extractors, classifier, refs, vae,
                                  ranks) or []
    if not ranks.is_main:
        return []
    context = _row_context(recipe, job, state, str(checkpoint), net)
    context["intermediate"] = context["checkpoint_step"] < recipe.stage(job["method"]).steps
    references = {prefix: _reference_context(refs[prefix], extractors[prefix]) for prefix in extractors}
    rows = [{**context, **references["dinov2" if row["metric"] == "fd_dinov2" else "features"], **row}
            for row in rows]
    return [{**row, "guidance": _reported_guidance(recipe, job["method"], row["guidance"])} for row in rows]


def evaluate_stage(job: dict, checkpoint: str) -> list[dict]:
    """Metrics rows for one trained stage; cached in metrics.json for that checkpoint and these settings.
    In a multi-task job every rank generates its shards; rank 0 computes the metrics and writes the rows."""
    import torch
    from .classifier import load_digits_classifier
    from .distributed import init_ranks
    from .train import device

    torch.set_num_threads(job["threads"])
    run_dir = Path(job["run_dir"])
    cached = finished_rows(job, checkpoint)
    if cached is not None:
        return cached
    ranks = init_ranks()
    if ranks.is_main:
        store.write_json(run_dir / "progress.json", {**store.read_json(run_dir / "progress.json", {}),
                                                     "state": "evaluating"})
    recipe, data, state, net, labels = _evaluation_inputs({**job, "checkpoint": checkpoint})
    extractors, vae = _extractors(recipe, device()), latent_decoder(recipe)
    classifier = load_digits_classifier() if recipe.data.name == "digits" and data.num_classes else None
    from .reference import reference_statistics

    refs = {prefix: reference_statistics(recipe, data, Path(job["runs_root"]), extractor, vae,
                                         "" if prefix == "features" else "_dinov2")
            for prefix, extractor in extractors.items()} if ranks.is_main else None
    tools = (extractors, classifier, refs, vae, ranks)
    rows = []
    for path, state, net, samples in _evaluated_networks(job, recipe, data, checkpoint, state, net):
        rows += _checkpoint_rows(job, recipe, data, labels, path, state, net, samples, tools)
    if not ranks.is_main:
        return []
    store.write_json(run_dir / "metrics.json", {"key": _metrics_key(job, checkpoint), "rows": rows})
    store.write_json(run_dir / "progress.json", {**store.read_json(run_dir / "progress.json", {}), "state": "done"})
    return rows


def run_job(job: dict):
    """What the executor runs: train a stage (kind "train", returns its final checkpoint) or evaluate its final
    checkpoint (kind "evaluate", returns metrics rows). A lock on the run folder keeps a second copy of the same job
    from running at once (two writers would interleave checkpoints): it waits for the first to end; in a multi-task
    job only rank 0 holds it."""
    from .distributed import job_task
    from .train import train_stage

    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    kind = job.get("kind", "train")
    if kind not in ("train", "generate", "evaluate"):
        raise ValueError(f"unknown job kind {kind!r}; expected train, generate or evaluate")
    if diverged_record(run_dir) and kind != "train":  # nothing to sample: rows that say so
        return [] if kind == "generate" else diverged_rows(job)
    if kind == "generate":  # a share of the shards; several tasks write different files, so no lock
        return generate_part({**job, "checkpoint": str(_final_checkpoint(job, run_dir))}, tuple(job["part"]))
    if job_task()[0] > 0:  # the other ranks of a data-parallel job: rank 0 holds the lock for them
        return train_stage(job) if kind == "train" else _evaluate_final(job, run_dir)
    with open(run_dir / ".lock", "w") as lock:
        _wait_for_lock(lock, run_dir, job.get("lock_wait_s", LOCK_WAIT_S))
        return train_stage(job) if kind == "train" else _evaluate_final(job, run_dir)


LOCK_WAIT_S = 1800  # a rerun while an earlier copy still runs (its launcher was killed): wait for it this long


def _wait_for_lock(lock, run_dir: Path, wait_s: float) -> None:
    """Take the run folder's lock. Another process holding it is running this job (an earlier run whose launcher
    was killed, or a duplicate submission): wait for it to finish, then go on, which finds its work done or
    resumes it; give up with a clear error after wait_s seconds."""
    import fcntl
    import sys

    deadline = time.time() + wait_s
    told = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.time() >= deadline:
                raise RuntimeError(f"{run_dir.name} is still running in another process after {wait_s:g} s; wait "
                                   "for it or stop it (scm-bench cancel RECIPE), then run again") from None
            if not told:
                print(f"{run_dir.name} is running in another process; waiting for it", file=sys.stderr, flush=True)
                told = True
            time.sleep(1.0)


def _final_checkpoint(job: dict, run_dir: Path) -> Path:
    final = store.checkpoint_path(run_dir, job["recipe"]["stages"][job["method"]]["steps"])
    problem = store.checkpoint_problem(final)
    if problem is not None:
        raise FileNotFoundError(f"{run_dir.name}: final checkpoint {final.name} is {problem}; rerun to train it")
    return final


def _evaluate_final(job: dict, run_dir: Path) -> list[dict]:
    return evaluate_stage(job, str(_final_checkpoint(job, run_dir)))

"""The evaluation worker: a finished training job sampled at every setting of its method's sampling block
(per-sample seeds, sharded, resumable), measured in the recipe's feature space (FID, KID, improved precision and
recall, FD_DINOv2 where asked, class accuracy on the digits), with a sample grid per setting; and the
generation-array task that makes a share of the shards beforehand. Metrics rows are long: one per (checkpoint,
setting, metric)."""
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import store
from ..compute import Ranks, device, init_ranks, read_network
from ..compute.posthoc import ema_weights
from ..data import load_data
from ..evaluation.bootstrap import bootstrap_fid_interval
from ..evaluation.classifier import load_digits_classifier
from ..evaluation.features import build_dinov2_extractor, build_extractor
from ..evaluation.generate import generate
from ..evaluation.images import grid_indices, latent_decoder, pixels_of, write_grid
from ..evaluation.metrics import feature_statistics, frechet_distance, kernel_distance
from ..evaluation.precision_recall import matched_precision_recall
from ..evaluation.reference import reference_statistics
from ..evaluation.shards import Sampler, shard_features
from ..recipe.jobs import EvalJob
from ..recipe.sections import sigma_rel_key
from .rows import checkpoint_context, finished_rows, job_context, write_rows
from .scalars import log_evaluation


def _extractors(job: EvalJob) -> dict:
    """{shard file prefix: Extractor}: FID's features, and DINOv2's where FD_DINOv2 is asked for."""
    ev = job.evaluation
    extractors = {"features": build_extractor(ev.features, ev.fid_mode, device())}
    if ev.fd_dinov2:
        extractors["dinov2"] = build_dinov2_extractor(ev.dinov2_repo, device())
    return extractors


@dataclass
class _Sampled:
    """One network an evaluation samples: a checkpoint's EMA, where its samples go and what its rows add (with a
    sigma_rel sweep: the EMA's length, and for the other lengths' rows ema_sweep)."""
    path: Path
    state: dict
    net: nn.Module
    samples: Path
    labels: dict = field(default_factory=dict)


class _Inputs:
    """What every checkpoint of an evaluation is sampled with: its data, labels and tools."""

    def __init__(self, job: EvalJob):
        self.job, self.method = job, job.train.method()
        self.data = load_data(job.train.data)
        num_classes = self.data.num_classes
        self.labels = (torch.arange(num_classes).repeat_interleave(job.evaluation.samples_per_class)
                       if num_classes else None)
        self.count = len(self.labels) if self.labels is not None else job.evaluation.samples_per_class
        self.extractors, self.vae = _extractors(job), latent_decoder(job.train.data)
        digits = job.train.data.name == "digits" and num_classes
        self.classifier = load_digits_classifier() if digits else None

    def checkpoints(self):
        """The networks to sample, loaded one at a time: the final checkpoint's EMA, its EMAs of the other lengths
        of the sigma_rel sweep, then each step of FID over training."""
        train, sweep = self.job.train, self.job.sigma_rel_sweep
        sampled = train.spec.ema.sampled_sigma_rel
        labels = {"sigma_rel": sampled} if sweep and sampled is not None else {}
        for step in [train.steps, *self.job.during_training]:
            path = store.checkpoint_path(train.path, step)
            state = store.load_checkpoint(path)
            net = read_network(train, train, self.data.shape, self.data.num_classes, state)
            folder = self.job.path / "samples" / ("" if step == train.steps else f"step-{step:07d}")
            yield _Sampled(path, state, net, folder, labels)
            if step == train.steps:
                yield from self.other_lengths(path, state)

    def other_lengths(self, path: Path, state: dict):
        """The final checkpoint's EMAs of the sweep's other lengths: tracked, else reconstructed post hoc."""
        train = self.job.train
        sampled = train.spec.ema.sampled_sigma_rel
        for sigma_rel in self.job.sigma_rel_sweep:
            if sampled is not None and sigma_rel_key(sigma_rel) == sigma_rel_key(sampled):
                continue
            weights, rebuilt = ema_weights(train, state, sigma_rel)
            net = read_network(train, train, self.data.shape, self.data.num_classes, weights=weights)
            ema = f"power sigma_rel={sigma_rel:g}" + (" (post-hoc)" if rebuilt else "")
            yield _Sampled(path, state, net, self.job.path / "samples" / f"sigma_rel-{sigma_rel_key(sigma_rel)}",
                           {"sigma_rel": sigma_rel, "ema": ema, "ema_sweep": True})

    def sampler(self, net) -> Sampler:
        return Sampler(self.method, net, self.data.shape, self.labels, self.job.sample_seed,
                       self.job.evaluation.batch_size, self.extractors, self.vae, self.classifier)


def generate_part(job: EvalJob, part: tuple[int, int], threads: int) -> list:
    """One task of a generation array: this part's shards of every setting, features saved; no metrics."""
    torch.set_num_threads(threads)
    inputs, ranks = _Inputs(job), init_ranks()
    for sampled in inputs.checkpoints():
        for setting in inputs.method.sample_settings(job.sampling):
            shard_features(inputs.sampler(sampled.net), setting, sampled.samples / setting.name, inputs.count,
                           job.evaluation.shard_size, ranks, part)
    return []


def _metrics(feats: dict, classes, labels, refs: dict, device=None, resamples: int = 0) -> dict[str, dict]:
    """{metric: its row's own fields}: the value; for FID its bootstrap interval over the generated samples (with
    `resamples`), for precision and recall the k and the samples per side."""
    ref = refs["features"]
    metrics = {"fid": frechet_distance(*feature_statistics(feats["features"]), ref["mu"], ref["sigma"])}
    extra = {}
    if resamples:
        low, high = bootstrap_fid_interval(feats["features"], ref["mu"], ref["sigma"], resamples, device=device,
                                           measured=metrics["fid"])
        extra["fid"] = {"fid_ci_low": low, "fid_ci_high": high, "fid_ci_resamples": resamples}
    if ref.get("feats") is not None:  # KID and precision/recall need real features, not only mu and sigma
        metrics["kid"] = kernel_distance(feats["features"], ref["feats"])
        pr = matched_precision_recall(ref["feats"], feats["features"], device=device)
        for name in ("precision", "recall") if pr else ():
            metrics[name], extra[name] = pr[name], {"pr_k": pr["k"], "pr_samples": pr["count"]}
    if "dinov2" in feats:
        metrics["fd_dinov2"] = frechet_distance(*feature_statistics(feats["dinov2"]), refs["dinov2"]["mu"],
                                                refs["dinov2"]["sigma"])
    if classes is not None:
        metrics["class_accuracy"] = float((classes == labels.numpy()).mean())
    return {name: {"value": value, **extra.get(name, {})} for name, value in metrics.items()}


def _setting_rows(inputs: _Inputs, net, setting, samples: Path, refs: dict, ranks: Ranks) -> list[dict]:
    """Features of every sample of one setting (shards under samples/SETTING) -> its metrics; a grid of fixed
    samples. Empty off rank 0."""
    job, start = inputs.job, time.time()
    sampler = inputs.sampler(net)
    feats, classes = shard_features(sampler, setting, samples / setting.name, inputs.count, job.evaluation.shard_size,
                                    ranks)
    if not ranks.is_main:
        return []
    sample_seconds = time.time() - start
    indices, rows, cols = grid_indices(job.evaluation.samples_per_class, inputs.data.num_classes, inputs.count)
    grid = samples / f"grid-{setting.name}.png"
    shown = generate(inputs.method, net, setting, indices, inputs.labels, inputs.data.shape, job.sample_seed)
    write_grid(pixels_of(shown, inputs.method.sigma_data, inputs.vae), grid, rows, cols)
    common = {"sampler": setting.sampler, "nfe": setting.nfe(inputs.labels is not None),
              "guidance": setting.guidance, "num_samples": len(feats["features"]), "sample_seconds": sample_seconds,
              "grid": str(grid.resolve())}
    references = {prefix: _reference_context(refs[prefix], inputs.extractors[prefix]) for prefix in refs}
    metrics = _metrics(feats, classes, inputs.labels, refs, inputs.extractors["features"].device,
                       job.evaluation.bootstrap_resamples)
    return [{**common, **references["dinov2" if name == "fd_dinov2" else "features"], "metric": name, **fields}
            for name, fields in metrics.items() if job.sampling.reports(name, setting.guidance)]


def _reference_context(ref: dict, extractor) -> dict:
    return {"reference": ref["source"], "reference_hash": ref["hash"], "reference_count": ref["count"],
            "real_vs_real_half_fid": ref["real_vs_real_half_fid"], "features": extractor.name}


def evaluate(job: EvalJob, threads: int) -> list[dict]:
    """Metrics rows of a trained job (cached in the evaluation's metrics.json for that checkpoint). In a multi-task
    job every rank generates its shards; rank 0 computes the metrics and writes the rows."""
    torch.set_num_threads(threads)
    cached = finished_rows(job)
    if cached is not None:
        return cached
    ranks = init_ranks()
    if ranks.is_main:
        store.write_json(job.path / "progress.json", {"state": "evaluating"})
    inputs = _Inputs(job)
    refs = {prefix: reference_statistics(job, inputs.data, Path(job.reference_cache), extractor, inputs.vae,
                                         "" if prefix == "features" else "_dinov2")
            for prefix, extractor in inputs.extractors.items()} if ranks.is_main else {}
    rows, context = [], job_context(job)
    for sampled in inputs.checkpoints():
        here = {**checkpoint_context(job, sampled.state, sampled.path, sampled.net), **sampled.labels}
        for setting in inputs.method.sample_settings(job.sampling):
            rows += [{**context, **here, **row}
                     for row in _setting_rows(inputs, sampled.net, setting, sampled.samples, refs, ranks)]
    if not ranks.is_main:
        return []
    write_rows(job, rows)
    log_evaluation(job, rows)  # FID over training in TensorBoard, beside the training's scalars
    store.write_json(job.path / "progress.json", {"state": "done"})
    return rows

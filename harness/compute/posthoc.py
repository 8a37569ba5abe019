"""EDM2's post-hoc EMA for a training job (`post_hoc:` in its stage's `ema:`), and the EMA weights of any length a
finished job can give.

While the job trains, the sampled network's power EMAs of the post_hoc.sigma_rel lengths are snapshotted every
snapshot_every steps and at the last step into JOB/phema/step-N.pt (atomic, with a checksum; the running EMAs
themselves are in every checkpoint, so a resumed job writes the same snapshots). After training, the EMA of any
sigma_rel is their least-squares combination (scm.phema).
"""
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from scm.ema import sigma_rel_to_gamma
from scm.phema import PowerProfile, blend, post_hoc_coefficients, profile_fit_error

from .. import store
from ..recipe.jobs import TrainJob
from ..recipe.sections import sigma_rel_key
from .networks import sampled_ema

SNAPSHOTS = "phema"  # under a training job's folder


def snapshot_path(job_path: Path, step: int) -> Path:
    return Path(job_path) / SNAPSHOTS / f"step-{step:08d}.pt"


def snapshot_steps(job: TrainJob) -> list[int]:
    """The steps a job snapshots its post-hoc EMAs at: every snapshot_every, and the last (the reconstruction's
    time); none without post_hoc."""
    if job.spec.ema.post_hoc is None:
        return []
    return [step for step in range(1, job.steps + 1) if snapshot_due(job, step)]


def snapshot_due(job: TrainJob, step: int) -> bool:
    post_hoc = job.spec.ema.post_hoc
    return post_hoc is not None and (step % post_hoc.snapshot_every == 0 or step == job.steps)


def save_snapshot(job: TrainJob, step: int, emas: dict[float, nn.Module]) -> None:
    """JOB/phema/step-N.pt: the parameters of each post-hoc EMA (by sigma_rel) at this step, and the buffers (an
    EMA copies the network's, so every length has the same)."""
    parameters, buffers = {}, {}
    for sigma_rel, ema in emas.items():
        names = {name for name, _ in ema.named_parameters(remove_duplicate=False)}
        weights = ema.state_dict()
        parameters[sigma_rel_key(sigma_rel)] = {k: v for k, v in weights.items() if k in names}
        buffers = {k: v for k, v in weights.items() if k not in names}
    store.save_checkpoint(snapshot_path(job.path, step), {"step": step, "parameters": parameters, "buffers": buffers})


@dataclass(frozen=True)
class Reconstruction:
    """The EMA of `sigma_rel` at `step` rebuilt from snapshots: its weights, each snapshot's (sigma_rel, step) and
    coefficient, and how far its averaging profile is from the target's (relative L2)."""
    sigma_rel: float
    step: int
    weights: dict
    snapshots: list[tuple[float, int]]
    coefficients: list[float]
    fit_error: float


def _snapshot_files(job: TrainJob, step: int) -> list[Path]:
    """The intact snapshot files up to `step`; an error naming the first that is missing or damaged."""
    paths = [snapshot_path(job.path, s) for s in snapshot_steps(job) if s <= step]
    for path in paths:
        problem = store.checkpoint_problem(path)
        if problem is not None:
            raise ValueError(f"post-hoc EMA snapshot {path} is {problem}; delete the job's checkpoints from that step "
                             "on and run the recipe again to write it anew")
    return paths


def reconstruct(job: TrainJob, sigma_rel: float, step: int | None = None) -> Reconstruction:
    """The sampled network's EMA of `sigma_rel` at `step` (default: the last) from the job's snapshots up to it."""
    post_hoc = job.spec.ema.post_hoc
    if post_hoc is None:
        raise ValueError(f"stage {job.stage} keeps no post-hoc EMA snapshots; add post_hoc: {{snapshot_every: N}} to "
                         "its ema: and train it again")
    step = job.steps if step is None else step
    paths = _snapshot_files(job, step)
    if not paths:
        raise ValueError(f"stage {job.stage} has no post-hoc EMA snapshot up to step {step}; use a step of "
                         f"{snapshot_steps(job)}")
    pairs = [(s, int(path.stem.split("-")[1])) for path in paths for s in post_hoc.sigma_rel]
    profiles = [PowerProfile(sigma_rel_to_gamma(s), t) for s, t in pairs]
    target = PowerProfile(sigma_rel_to_gamma(sigma_rel), step)
    coefficients = post_hoc_coefficients(profiles, target)
    buffers = {}

    def parameters():  # one snapshot file in memory at a time
        nonlocal buffers
        for path in paths:
            snapshot = store.load_checkpoint(path)
            buffers = snapshot["buffers"]
            for s in post_hoc.sigma_rel:
                yield snapshot["parameters"][sigma_rel_key(s)]

    weights = blend(parameters(), coefficients)
    return Reconstruction(sigma_rel, step, {**weights, **buffers}, pairs, [float(x) for x in coefficients],
                          profile_fit_error(profiles, target, coefficients))


def ema_weights(job: TrainJob, state: dict, sigma_rel: float) -> tuple[dict, bool]:
    """The sampled network's EMA weights of this length at a checkpoint (`state`), and whether they were
    reconstructed: the sampled EMA, one tracked beside it (also_sigma_rel, post_hoc's), else a reconstruction."""
    ema, key = job.spec.ema, sigma_rel_key(sigma_rel)
    if ema.sampled_sigma_rel is not None and sigma_rel_key(ema.sampled_sigma_rel) == key:
        return sampled_ema(state), False
    tracked = state.get("tracked_ema", {})
    if key in tracked:
        return tracked[key], False
    return reconstruct(job, sigma_rel, int(state["step"])).weights, True

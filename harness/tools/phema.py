"""`scm-bench phema RECIPE --stage NAME --sigma-rel S`: the EMA of any length of a stage that kept post-hoc EMA
snapshots (`post_hoc:` in its `ema:`), reconstructed after training and saved as a checkpoint the harness samples
and starts from (`init: {checkpoint: FILE}`)."""
from pathlib import Path

from .. import store
from ..compute.posthoc import SNAPSHOTS, Reconstruction, reconstruct
from ..recipe.jobs import TrainJob
from ..recipe.manifest import RunManifest
from ..recipe.sections import sigma_rel_key
from ..recipe.sweep import axis_values


def stage_job(manifest: RunManifest, stage: str, variant: str | None) -> TrainJob:
    """The run's training job of this stage (of the variant that `variant` names, e.g. "seed=1")."""
    own = [job for job in manifest.plan.train if job.recipe == manifest.recipe]
    jobs = [job for job in own if job.stage == stage]
    if not jobs:
        stages = ", ".join(dict.fromkeys(job.stage for job in own))
        raise ValueError(f"--stage {stage}: the run of {manifest.recipe} has no such stage; use one of {stages}")
    if variant is not None:
        wanted = axis_values(variant).items()
        jobs = [job for job in jobs if wanted <= axis_values(job.variant).items()]
    if len(jobs) != 1:
        labels = ", ".join(job.variant for job in jobs) or "none"
        raise ValueError(f"--stage {stage}: {len(jobs)} variants match ({labels}); choose one with --variant")
    return jobs[0]


def default_output(job: TrainJob, sigma_rel: float) -> Path:
    return job.path / SNAPSHOTS / f"sigma_rel-{sigma_rel_key(sigma_rel)}.pt"


def write_reconstruction(job: TrainJob, sigma_rel: float, out: Path | None = None) -> tuple[Path, Reconstruction]:
    """Reconstruct the stage's EMA of `sigma_rel` at its last step and save it as a checkpoint (its sampled network's
    weights and EMA, both the reconstruction); returns where, and the reconstruction."""
    if not store.checkpoint_complete(job.final_checkpoint):
        raise ValueError(f"stage {job.stage} has not finished training ({job.final_checkpoint} is missing); run the "
                         "recipe first (scm-bench status shows where it is)")
    rebuilt = reconstruct(job, sigma_rel)
    role = job.method().networks[0].role  # the sampled network
    out = Path(out) if out is not None else default_output(job, sigma_rel)
    store.save_checkpoint(out, {
        "step": rebuilt.step, "sampled": role, "networks": {role: rebuilt.weights}, "ema": {role: rebuilt.weights},
        "post_hoc": {"sigma_rel": sigma_rel, "snapshots": [list(pair) for pair in rebuilt.snapshots],
                     "coefficients": rebuilt.coefficients, "fit_error": rebuilt.fit_error}})
    return out, rebuilt

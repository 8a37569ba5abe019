"""Checks before anything is submitted or written: the data can feed the networks, the files the evaluation needs
are on this machine, guidance has labels to guide with, and no job's folder holds checkpoints of another network.
Each failure is one line naming the problem and the fix."""
from ..compute import checkpoint_mismatch
from ..data import load_data
from ..evaluation.dinov2 import check_dinov2
from ..evaluation.features import check_inception
from ..evaluation.reference import check_reference
from ..recipe.jobs import Plan


def _guidance_problem(job) -> str | None:
    """Classifier-free guidance needs labels to guide with: where a stage uses it on data without any."""
    method, stage = job.train.method(), job.stage
    cfg = max(s.cfg for s in method.sample_settings(job.sampling))
    if cfg > 1.0:
        where, fix = f"stages.{stage}.sampling.guidance", f"stages.{stage}.sampling.guidance: 1.0"
    elif method.teacher_guidance() > 1.0:
        where, fix, cfg = f"stages.{stage}", "its teacher guidance 1.0", method.teacher_guidance()
    else:
        return None
    return (f"{where}: classifier-free guidance {cfg:g} needs class labels, but the data have none "
            f"(data.class_conditional: false, or a folder without a labels file); set data.class_conditional: true "
            f"with labels, or {fix}")


def preflight(plan: Plan) -> None:
    """Raise ValueError or FileNotFoundError on the first problem (see the module docstring)."""
    datas = {}
    for job in plan.train:  # each data set loaded once, however many variants use it
        key = job.data.model_dump_json()
        data = datas.get(key) or datas.setdefault(key, load_data(job.data))
        levels = len(job.network.channel_mult or (1, 2))  # (1, 2): ToyUNet's default
        if job.network.name == "toy-unet" and data.shape[-1] % 2 ** (levels - 1):
            raise ValueError(f"images are {data.shape[-1]}x{data.shape[-1]} but network.channel_mult has {levels} "
                             f"levels; the resolution must be divisible by {2 ** (levels - 1)}")
        problem = checkpoint_mismatch(job, data.shape, data.num_classes)
        if problem:
            raise ValueError(problem)
    for job in plan.evaluate:
        data = datas[job.train.data.model_dump_json()]
        if job.evaluation.features == "inception":
            check_inception()
        if job.evaluation.fd_dinov2:
            check_dinov2(job.evaluation.dinov2_repo)
        check_reference(job.evaluation, data.shape)
        problem = _guidance_problem(job) if data.num_classes == 0 else None
        if problem:
            raise ValueError(problem)

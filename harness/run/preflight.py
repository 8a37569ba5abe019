"""Checks before anything is submitted or written: the data can feed the networks, the files the evaluation needs
are on this machine, guidance has labels to guide with, and no job's folder holds checkpoints of another network.
Each failure is one line naming the problem and the fix."""
from ..compute import checkpoint_mismatch
from ..data import load_data
from ..evaluation.dinov2 import check_dinov2
from ..evaluation.features import check_inception
from ..evaluation.reference import check_reference
from ..recipe import Plan


def _uses_guidance(job) -> bool:
    method = job.train.method()
    return method.teacher_guidance() > 1.0 or any(s.cfg > 1.0 for s in method.sample_settings(job.sampling))


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
        if data.num_classes == 0 and _uses_guidance(job):
            raise ValueError(f"stages.{job.train.stage}: classifier-free guidance > 1 needs class labels; give "
                             "data.labels or set its guidance to 1.0")

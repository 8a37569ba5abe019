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


class Missing(ValueError):
    """Every prerequisite a run lacks, one line each (what, and where to get it or the command that makes it)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        head = "" if len(problems) == 1 else f"{len(problems)} problems, all listed:\n  - "
        super().__init__(head + "\n  - ".join(problems))


class _Problems:
    """Collects problems (each once) instead of stopping at the first."""

    def __init__(self):
        self.found: list[str] = []

    def check(self, check, *args):
        """check(*args), its error kept as a problem; returns its result, or None when it failed."""
        try:
            return check(*args)
        except (ValueError, FileNotFoundError) as error:
            self.add(str(error))
            return None

    def add(self, problem: str | None) -> None:
        if problem and problem not in self.found:
            self.found.append(problem)


def _network_fits(job, data) -> str | None:
    levels = len(job.network.channel_mult or (1, 2))  # (1, 2): ToyUNet's default
    if job.network.name == "toy-unet" and data.shape[-1] % 2 ** (levels - 1):
        return (f"images are {data.shape[-1]}x{data.shape[-1]} but network.channel_mult has {levels} levels; the "
                f"resolution must be divisible by {2 ** (levels - 1)}")
    return checkpoint_mismatch(job, data.shape, data.num_classes)


def preflight(plan: Plan) -> None:
    """Raise Missing (a ValueError) listing every problem found (see the module docstring): data sets, reference
    statistics, Inception and DINOv2 weights, all at once."""
    problems, datas = _Problems(), {}
    for job in plan.train:  # each data set loaded once, however many variants use it
        key = job.data.model_dump_json()
        if key not in datas:
            datas[key] = problems.check(load_data, job.data)
        if datas[key] is not None:
            problems.add(_network_fits(job, datas[key]))
    for job in plan.evaluate:
        data = datas.get(job.train.data.model_dump_json())
        if job.evaluation.features == "inception":
            problems.check(check_inception)
        if job.evaluation.fd_dinov2:
            problems.check(check_dinov2, job.evaluation.dinov2_repo)
        if data is not None:
            problems.check(check_reference, job.evaluation, data.shape)
            problems.add(_guidance_problem(job) if data.num_classes == 0 else None)
    if problems.found:
        raise Missing(problems.found)

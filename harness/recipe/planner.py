"""The one planning step: a recipe (every sweep variant) -> typed jobs (`Plan`).

Each stage of each variant is a training job and an evaluation; variants that train the same thing share the job
(a teacher shared by students of several settings is trained once), and so do recipes (the store is shared). A
job's variant label keeps only the sweep axes it depends on: a teacher shared by every variant of a seed sweep of
its students is labelled with none of them. Stages of other recipes that a stage starts from or reads are planned
with their own recipe and come first.
"""
from pathlib import Path

from .jobs import (Checkpoint, EvalJob, Plan, TrainJob, eval_job_id, evaluation_folder, reference_cache,
                   store_folder, train_job_id)
from .load import load_recipe
from .refs import CheckpointFile, OtherRecipe, local
from .schema import Recipe
from .sections import ResourcesConfig
from .smoke import smoke_recipe
from .sweep import axis_values, expand_sweep
from .text import RecipeError


def stage_order(recipe: Recipe) -> list[str]:
    """The stages, each after the stages of this recipe it starts from or reads (the graph is acyclic)."""
    order: list[str] = []

    def visit(name):
        if name in order:
            return
        stage = recipe.stages[name]
        for parent in (local(stage.init), local(stage.teacher)):
            if parent is not None:
                visit(parent)
        order.append(name)

    for name in recipe.stages:
        visit(name)
    return order


def evaluation_resources(train: ResourcesConfig, ranks: int) -> ResourcesConfig:
    """Evaluation runs on one node as evaluation.ranks tasks (one GPU each where training had GPUs), asking for
    the share of the training node's memory its tasks would have had (a 1-GPU evaluation of a job trained with
    --mem=480GB on 8 GPUs asks for 60 GB), never more than the training node's."""
    gpus = ranks if train.gpus_per_node else 0
    memory = train.mem_gb if train.mem_gb is None else min(train.mem_gb, train.mem_gb * ranks / train.tasks)
    return train.model_copy(update={"nodes": 1, "tasks_per_node": None if gpus else ranks, "gpus_per_node": gpus,
                                    "mem_gb": memory})


class _Planner:
    def __init__(self, runs_root: Path, visiting: tuple[str, ...]):
        self.runs_root, self.visiting = Path(runs_root), visiting

    def checkpoint(self, ref: CheckpointFile, where: str) -> Checkpoint:
        path = Path(ref.checkpoint)
        if not path.is_file():
            raise RecipeError(f"{where}.checkpoint: {path} not found; give the path of a training checkpoint "
                              "(runs/store/JOB/checkpoints/step-N.pt)")
        stat = path.stat()
        return Checkpoint(checkpoint=str(path), stamp=f"{stat.st_size}-{stat.st_mtime_ns}")

    def outside(self, ref: OtherRecipe, smoke: bool, where: str) -> TrainJob:
        """The training job of another recipe's stage (that recipe planned as it is, at toy scale with --smoke)."""
        key = str(Path(ref.recipe).resolve())
        if key in self.visiting:
            raise RecipeError(f"{where}: {ref.recipe} is already being planned (recipes that start from each other "
                              "form a loop); start one of them from a stage of its own")
        try:
            other = load_recipe(ref.recipe)
            other = smoke_recipe(other) if smoke else other
            jobs = _Planner(self.runs_root, (*self.visiting, key)).plan(other)
        except RecipeError as error:
            raise RecipeError(f"{where}: {error}") from None
        found = {job.id: job for job in jobs.train if job.recipe == other.name and job.stage == ref.stage
                 and any(_matches(label, ref.variant) for label in jobs.variants.get(job.id, [job.variant]))}
        if len(found) != 1:
            count = "no" if not found else f"{len(found)} different"
            hint = (f"add variant: (one of {', '.join(sorted({job.variant for job in found.values()}))})" if found
                    else f"check the stage name (stages of {ref.recipe}: {', '.join(other.stages)}) and variant")
            raise RecipeError(f"{where}: {ref.recipe} has {count} jobs for stage {ref.stage!r}; {hint}")
        return next(iter(found.values()))

    def source(self, variant: Recipe, name: str, field: str, built: dict) -> TrainJob | Checkpoint | None:
        ref, where = getattr(variant.stages[name], field), f"stages.{name}.{field}"
        if ref is None:
            return None
        if local(ref) is not None:
            return built[ref]
        if isinstance(ref, CheckpointFile):
            return self.checkpoint(ref, where)
        return self.outside(ref, variant.smoke, where)

    def train_job(self, variant: Recipe, name: str, built: dict) -> TrainJob:
        stage = variant.stages[name]
        init, teacher = self.source(variant, name, "init", built), self.source(variant, name, "teacher", built)
        job_id = train_job_id(stage, variant.network, variant.data, variant.sigma_data, variant.stage_seed(name),
                              init, teacher)
        return TrainJob(id=job_id, recipe=variant.name, stage=name, variant=variant.variant, size=None, spec=stage,
                        network=variant.network, data=variant.data, sigma_data=variant.sigma_data,
                        seed=variant.stage_seed(name), init=init, teacher=teacher,
                        resources=variant.stage_resources(name), folder=store_folder(self.runs_root, job_id))

    def plan(self, recipe: Recipe) -> Plan:
        train: dict[str, TrainJob] = {}
        evaluations: dict[str, EvalJob] = {}
        variants_of: dict[str, list[str]] = {}  # job id -> the labels of the variants that run it
        for variant in expand_sweep(recipe):
            built: dict[str, TrainJob] = {}
            for name in stage_order(variant):
                job = built[name] = self.train_job(variant, name, built)
                _add_with_parents(train, job)
                evaluation = _evaluation(variant, name, job, self.runs_root)
                evaluations.setdefault(evaluation.id, evaluation)
                for key in (job.id, evaluation.id):
                    variants_of.setdefault(key, []).append(variant.variant)
        labels = {key: _shared_label(variants) for key, variants in variants_of.items()}
        relabelled: dict[str, TrainJob] = {}
        ordered = [_relabel(job, labels, relabelled) for job in train.values()]
        evaluate = [job.model_copy(update={"variant": labels[job.id],
                                           "train": _relabel(job.train, labels, relabelled)})
                    for job in evaluations.values()]
        return Plan(recipe=recipe.name, train=ordered, evaluate=evaluate, variants=variants_of)


def _matches(label: str, wanted: str | None) -> bool:
    """Whether a job's variant label fits a reference's `variant:` (every axis it names, e.g. "size=S")."""
    return wanted is None or axis_values(wanted).items() <= axis_values(label).items()


def _add_with_parents(train: dict, job: TrainJob) -> None:
    for parent in job.parents:
        _add_with_parents(train, parent)
    train.setdefault(job.id, job)


def _evaluation(variant: Recipe, name: str, job: TrainJob, runs_root: Path) -> EvalJob:
    stage = variant.stages[name]
    sweep = stage.ema.evaluate_sigma_rel
    eval_id = eval_job_id(job, variant.evaluation, stage.sampling, stage.during_training, variant.seed, sweep)
    return EvalJob(id=eval_id, recipe=variant.name, stage=name, variant=variant.variant, train=job,
                   sampling=stage.sampling, during_training=stage.during_training, sigma_rel_sweep=sweep,
                   evaluation=variant.evaluation, sample_seed=variant.seed,
                   resources=evaluation_resources(job.resources, variant.evaluation.ranks),
                   folder=evaluation_folder(job, eval_id), reference_cache=reference_cache(runs_root))


def _shared_label(variants: list[str]) -> str:
    """The axes on which every variant running a job agrees (those it depends on)."""
    first = axis_values(variants[0])
    return ",".join(f"{axis}={value}" for axis, value in first.items()
                    if all(axis_values(v).get(axis) == value for v in variants))


def _relabel(job: TrainJob, labels: dict, done: dict) -> TrainJob:
    """The job (and the jobs inside it) with the variant labels of this plan; jobs of other recipes keep theirs."""
    if job.id not in done:
        parents = {field: _relabel(getattr(job, field), labels, done) if isinstance(getattr(job, field), TrainJob)
                   else getattr(job, field) for field in ("init", "teacher")}
        label = labels.get(job.id, job.variant)
        size = job.network.size or axis_values(label).get("size")
        done[job.id] = job.model_copy(update={"variant": label, "size": size, **parents})
    return done[job.id]


def plan_jobs(recipe: Recipe, runs_root: Path) -> Plan:
    """Every job of the recipe (see the module docstring); RecipeError for a reference that cannot be resolved.
    Folders are absolute, so the manifest is read the same from any working directory."""
    return _Planner(Path(runs_root).resolve(), ()).plan(recipe)

"""Typed jobs: what the planner makes of a recipe once, and what launch, the workers, status, plan and the report
pass on. A training job's id is a hash of what it trains (method and settings, network, data, seed and the ids of
the jobs it starts from and reads), never of the recipe or stage that asks for it: every recipe that needs the
same teacher finds the one job in the store (runs/store/ID/). An evaluation's id adds how it samples and measures.
"""
import hashlib
import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SerializeAsAny, model_validator

from scm.methods import Method, SamplingSettings, method_class

from .schema import Stage
from .sections import DataConfig, EvaluationConfig, NetworkConfig, ResourcesConfig

STORE = "store"  # under the runs root: every training job's folder, whichever recipe made it
EVALUATIONS = "evaluations"  # under a training job's folder: one folder per evaluation of it
# a stage's fields that say how it runs, is evaluated or is reached, not what it trains
NOT_TRAINED = {"resources", "sampling", "during_training", "init", "teacher", "seed"}
NOT_TRAINED_EMA = {"evaluate_sigma_rel"}  # which EMAs are evaluated, not which are kept


def config_hash(*parts) -> str:
    """Content hash of resolved settings (10 hex digits)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Checkpoint(Frozen):
    """Weights from a checkpoint file a recipe names (its EMA weights; built with the reader's network)."""
    checkpoint: str
    stamp: str  # size and modification time: a changed file is another source

    @property
    def id(self) -> str:
        return f"checkpoint-{config_hash(str(Path(self.checkpoint).resolve()), self.stamp)}"

    @property
    def final_checkpoint(self) -> Path:
        return Path(self.checkpoint)


class TrainJob(Frozen):
    """One stage of one variant, trained once: the labels (recipe, stage, variant, size) say who planned it."""
    id: str
    recipe: str
    stage: str
    variant: str
    size: str | None
    spec: Stage
    network: NetworkConfig
    data: DataConfig
    sigma_data: float
    seed: int
    init: "TrainJob | Checkpoint | None" = None
    teacher: "TrainJob | Checkpoint | None" = None
    resources: ResourcesConfig
    folder: str

    @property
    def method_class(self) -> type[Method]:
        return self.spec.method_class

    def method(self) -> Method:
        return self.spec.make_method(self.sigma_data)

    @property
    def path(self) -> Path:
        return Path(self.folder)

    @property
    def steps(self) -> int:
        return self.spec.steps

    @property
    def final_checkpoint(self) -> Path:
        return self.path / "checkpoints" / f"step-{self.steps:08d}.pt"

    @property
    def parents(self) -> list["TrainJob"]:
        return [p for p in (self.init, self.teacher) if isinstance(p, TrainJob)]

    @property
    def parent_id(self) -> str:
        """The job its results are compared with: its teacher, else where it started; itself for a root job."""
        parent = self.teacher or self.init
        return parent.id if parent is not None else self.id

    @property
    def label(self) -> str:
        return f"{self.stage} {self.variant}".strip()


def train_job_id(spec: Stage, network: NetworkConfig, data: DataConfig, sigma_data: float, seed: int,
                 init, teacher) -> str:
    trained = spec.model_dump(exclude={**dict.fromkeys(NOT_TRAINED, True), "ema": NOT_TRAINED_EMA},
                              exclude_defaults=True)
    content = config_hash(trained, network.model_dump(exclude_defaults=True), data.model_dump(exclude_defaults=True),
                          sigma_data, seed, init.id if init else None, teacher.id if teacher else None)
    return f"{_slug(spec.method_class.name)}-{content}"


class EvalJob(Frozen):
    """The evaluation of a training job's final checkpoint (and of its during_training checkpoints): every setting
    of its sampling block, measured by the recipe's evaluation protocol. Labelled with the stage that asks for it
    (two stages of one recipe may train the very same job and sample it differently)."""
    id: str
    recipe: str
    stage: str
    variant: str
    train: TrainJob
    sampling: SerializeAsAny[SamplingSettings]
    during_training: list[int] = []
    sigma_rel_sweep: list[float] = []  # the final checkpoint also sampled with these EMAs (stage's evaluate_sigma_rel)
    evaluation: EvaluationConfig
    sample_seed: int  # every sample's seed derives from it (the recipe's seed): common random numbers
    resources: ResourcesConfig
    folder: str
    reference_cache: str  # where reference statistics computed from the data set are kept (runs/_reference)

    @model_validator(mode="before")
    @classmethod
    def _method_sampling(cls, data):
        """Read back from JSON, the sampling block is its method's model again."""
        if isinstance(data, dict) and isinstance(data.get("sampling"), dict):
            train = data["train"]
            method = train.spec.method if isinstance(train, TrainJob) else train["spec"]["method"]
            data = {**data, "sampling": method_class(method).Sampling.model_validate(data["sampling"])}
        if isinstance(data, dict) and "stage" not in data and "train" in data:  # manifests written before it was kept
            train = data["train"]
            data = {**data, "stage": train.stage if isinstance(train, TrainJob) else train["stage"]}
        return data

    @property
    def path(self) -> Path:
        return Path(self.folder)

    @property
    def label(self) -> str:
        return f"{self.stage} {self.variant}".strip()

    def checkpoint_steps(self) -> list[int]:
        """The steps it evaluates: the last, and those of FID over training."""
        return [self.train.steps, *self.during_training]


def eval_job_id(train: TrainJob, evaluation: EvaluationConfig, sampling: SamplingSettings, during_training,
                sample_seed: int, sigma_rel_sweep=()) -> str:
    protocol = evaluation.model_dump(exclude=EvaluationConfig.SPLIT, exclude_defaults=True)
    sweep = [list(sigma_rel_sweep)] if sigma_rel_sweep else []  # no sweep: the id evaluations always had
    return config_hash(train.id, protocol, sampling.model_dump(exclude_defaults=True), list(during_training),
                       sample_seed, *sweep)


def store_folder(runs_root: Path, job_id: str) -> str:
    return str(Path(runs_root) / STORE / job_id)


def reference_cache(runs_root: Path) -> str:
    return str(Path(runs_root) / "_reference")


def evaluation_folder(train: TrainJob, eval_id: str) -> str:
    return str(train.path / EVALUATIONS / eval_id)


class Plan(Frozen):
    """Every job a recipe runs: training jobs parents first (jobs of other recipes it starts from included), then
    one evaluation per training job of its own and evaluation settings; and, per job id, the full labels of the
    sweep variants that run it (a job's own label keeps only the axes they agree on)."""
    recipe: str
    train: list[TrainJob]
    evaluate: list[EvalJob]
    variants: dict[str, list[str]] = {}


TrainJob.model_rebuild()

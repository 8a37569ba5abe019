"""The recipe schema: a recipe file (read by recipe_yaml) in, validated settings out, with errors that name the file
and the field."""
import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .recipe_yaml import RecipeError, apply_overrides, parse_yaml


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Prepared data sets (`scm-bench prepare NAME`): image shape [C, H, W] and number of classes
PREPARED_DATASETS = {"cifar10": ((3, 32, 32), 10), "imagenet64": ((3, 64, 64), 1000),
                     "imagenet512-latents": ((4, 64, 64), 1000)}  # SD VAE latents of 512x512 images


class DataConfig(Strict):
    name: Literal["digits", "folder", "cifar10", "imagenet64", "imagenet512-latents", "synthetic"] = "digits"
    path: str | None = None  # folder: PNGs; prepared data sets: what `scm-bench prepare` wrote (default data/NAME)
    labels: str | None = None  # folder: text file, one class index per image, in sorted file-name order
    shape: list[int] | None = Field(None, min_length=3, max_length=3)  # synthetic: [C, H, W]
    num_classes: int = Field(0, ge=0)  # synthetic
    count: int = Field(256, gt=0)  # synthetic: number of images
    latents: bool = False  # synthetic: the images are latents, decoded by `vae` for evaluation
    class_conditional: bool = True  # False: ignore the labels (the paper's CIFAR-10 models are unconditional)
    vae: str = "stabilityai/sd-vae-ft-mse"  # latent data sets: the SD VAE (sCM App. G), a local folder or HF cache

    @model_validator(mode="after")
    def _complete(self):
        if self.name == "folder" and not self.path:
            raise ValueError("data.name is 'folder' but data.path is not set; give the folder of PNG images")
        if self.name == "synthetic" and (not self.shape or min(self.shape) <= 0):
            raise ValueError("data.name is 'synthetic' but data.shape is not a positive [C, H, W]; e.g. [3, 8, 8]")
        return self

    @property
    def is_latent(self) -> bool:
        return self.name == "imagenet512-latents" or (self.name == "synthetic" and self.latents)

    def prepared_path(self) -> Path:
        return Path(self.path or f"data/{self.name}")


class NetworkConfig(Strict):
    """A network of the `scm.nets` registry. Fields left unset take that network's own default (EDM2 config G,
    EDM's DDPM++); `channels` is the base width (model channels) and `size` picks an EDM2 preset S..XXL."""
    name: Literal["toy-unet", "mlp", "unet-edm2", "ddpmpp"] = "toy-unet"
    size: Literal["S", "M", "L", "XL", "XXL"] | None = None  # unet-edm2 only
    channels: int | None = Field(None, gt=0)
    channel_mult: list[int] | None = Field(None, min_length=1)
    blocks_per_level: int | None = Field(None, gt=0)
    attn_resolutions: list[int] | None = None
    time_embedding: Literal["positional", "fourier"] = "positional"  # sCM Sec. 4.1: positional; Fig. 4 compares
    fourier_scale: float = Field(16.0, gt=0)
    c_noise: Literal["t", "log-sigma"] = "t"  # TrigFlow: c_noise(t) = t
    modulation: Literal["double-norm", "edm2"] = "double-norm"  # unet-edm2 only
    dropout_max_resolution: int | None = Field(None, gt=0)  # dropout only at res <= this (sCM App. G: 16)
    guidance_input: bool = False  # sCD on ImageNet 512: the student takes the CFG scale s

    @model_validator(mode="after")
    def _only_where_meaningful(self):
        if self.name != "unet-edm2" and (self.size or self.modulation != "double-norm"):
            raise ValueError(f"network.size and network.modulation apply to unet-edm2, not {self.name}; remove them "
                             "or set network.name: unet-edm2")
        return self

    @model_validator(mode="after")
    def _attention_heads_fit(self):
        if self.name != "toy-unet":
            return self
        widths = [(self.channels or 32) * m for m in (self.channel_mult or [1, 2])]
        bad = [w for w in widths if w <= 0 or w % max(1, w // 32)]  # heads of about 32 channels must divide w
        if bad:
            raise ValueError(f"network widths {bad} (channels x channel_mult) must split into attention heads of "
                             "about 32 channels; use multiples of 32, or 32 and below")
        return self


class OptimizerConfig(Strict):
    name: Literal["adam", "radam"] = "adam"
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = Field(1e-8, gt=0)
    schedule: Literal["constant", "inverse-sqrt"] = "constant"
    ref_steps: int = Field(1000, gt=0)  # t_ref of EDM2's lr_ref / sqrt(max(step / t_ref, 1))
    rampup_steps: int = Field(0, ge=0)


class EMAConfig(Strict):
    kind: Literal["power", "halflife"] = "power"
    sigma_rel: float = Field(0.05, gt=0, lt=0.3)
    halflife_images: float = Field(50_000, gt=0)


class TangentConfig(Strict):
    normalization: Literal["norm", "clip", "none"] = "norm"
    norm_constant: float = Field(0.1, gt=0)  # c, Alg. 1
    warmup_steps: int = Field(10_000, ge=0)  # H, Alg. 1
    jvp_method: Literal["dual", "torch-func"] = "dual"  # dual: one pass with tangent rules; torch-func: reference


class ResourcesConfig(Strict):
    """What a stage's job asks Slurm for (executor: slurm); the local and debug executors use tasks_per_node only
    (processes on this machine). World size = nodes x tasks_per_node; each task is one DDP rank."""
    nodes: int = Field(1, gt=0)
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int | None = Field(None, gt=0)  # default: one per GPU, or 1 without GPUs
    cpus_per_task: int = Field(2, gt=0)  # also each task's torch threads
    mem_gb: float | None = Field(None, gt=0)
    time_min: int = Field(60, gt=0)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpu_memory_gb: float = Field(80.0, gt=0)  # for `scm-bench plan`'s memory check (H100 80 GB)

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks

    @model_validator(mode="after")
    def _one_task_per_gpu(self):
        if self.gpus_per_node and self.tasks_per_node and self.tasks_per_node != self.gpus_per_node:
            raise ValueError(f"resources.tasks_per_node {self.tasks_per_node} != gpus_per_node {self.gpus_per_node}; "
                             "DDP runs one task per GPU (leave tasks_per_node unset)")
        return self


class StageConfig(Strict):
    steps: int = Field(gt=0)
    batch_size: int = Field(128, gt=0)  # global: split over nodes x tasks_per_node ranks
    micro_batch: int | None = Field(None, gt=0)  # per rank and pass; gradient accumulation when below the share
    optimizer: OptimizerConfig = OptimizerConfig()
    ema: EMAConfig = EMAConfig()
    p_mean: float = -1.0
    p_std: float = Field(1.4, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    label_dropout: float = Field(0.0, ge=0, le=1)
    checkpoint_every: int = Field(500, gt=0)
    # a non-finite loss, tangent or gradient: end the job as diverged ("stop"), or skip that step ("skip") and end
    # it as diverged only after more than max_skipped_steps skips
    on_nonfinite: Literal["stop", "skip"] = "stop"
    # sct only: None = continuous time (sCT); N = the discrete-time consistency objective on N steps of [0, t_max]
    discrete_steps: int | None = Field(None, gt=1)
    max_skipped_steps: int = Field(100, ge=0)
    tangent: TangentConfig = TangentConfig()  # sCT / sCD only
    adaptive_weighting: bool = True  # learn w(t) (Alg. 1); false: w = 0, every t weighted equally (Fig. 5 ablation)
    # this stage's training seed (default: the recipe's): a sweep over it repeats students of one teacher; a seed
    # given explicitly is part of the job id even where it equals the recipe's (a separate, identical run)
    seed: int | None = Field(None, ge=0)
    guidance: float | tuple[float, float] = 1.0  # sCD: the teacher's CFG scale, or a range [lo, hi] drawn per sample
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast for the losses (forward, JVP); fp16 scales grads
    resources: dict | None = None  # this stage's changes to the recipe's resources, e.g. {gpus_per_node: 8}

    @field_validator("guidance")
    @classmethod
    def _guidance_at_least_one(cls, v):
        low, high = (v, v) if isinstance(v, (int, float)) else v
        if low < 1.0 or high < low:
            raise ValueError("guidance must be a scale >= 1 or a range [lo, hi] with 1 <= lo <= hi")
        return v

    @property
    def max_guidance(self) -> float:
        return self.guidance if isinstance(self.guidance, (int, float)) else self.guidance[1]


class EvaluationConfig(Strict):
    samples_per_class: int = Field(180, gt=0)
    consistency_nfe: list[int] = [1, 2]
    teacher_sampler: Literal["dpm-solver-2s", "euler"] = "dpm-solver-2s"
    # DPM-Solver-2S: NFE = 2 steps - 1 (35 for 18, App. G.1); a list gives one row per step count (FID vs NFE)
    teacher_steps: int | list[int] = 18
    guidance: float = Field(1.0, ge=1.0)  # the teacher's CFG scale when sampling
    student_guidance: list[float] = Field([1.0], min_length=1)  # scales told to an sCD student with a guidance input
    batch_size: int = Field(512, gt=0)
    metric: Literal["fid"] = "fid"  # KID is reported beside it where reference features exist
    features: Literal["digits-classifier", "inception"] = "digits-classifier"  # inception: the paper's FID
    fid_mode: Literal["legacy_tensorflow", "clean"] = "legacy_tensorflow"  # clean-fid mode for inception
    # reference statistics: unset = computed from the data set; an .npz with mu, sigma (and feats for KID); or a
    # clean-fid name NAME-SPLIT-MODE such as cifar10-train-legacy_tensorflow
    reference: str | None = None
    fd_dinov2: bool = False  # FD_DINOv2 beside FID (EDM2's second metric); needs DINOv2 in the local torch hub
    dinov2_repo: str | None = None  # a local clone of facebookresearch/dinov2 (default: torch hub's cached copy)
    shard_size: int = Field(1000, gt=0)  # samples per shard: the unit of resuming and of splitting over ranks
    ranks: int = Field(1, gt=0)  # data-parallel generation tasks in an evaluation job (one GPU each)
    array_tasks: int = Field(1, gt=0)  # > 1: generation also split over a job array that runs before the metrics
    # FID over training: students are also evaluated at these checkpoint steps (multiples of checkpoint_every)
    during_training: list[int] = []

    @field_validator("student_guidance")
    @classmethod
    def _scales_at_least_one(cls, v):
        if any(s < 1.0 for s in v):
            raise ValueError("student_guidance scales must be >= 1, e.g. [1.3, 1.5]")
        return v

    @field_validator("teacher_steps")
    @classmethod
    def _teacher_steps(cls, v):
        steps = v if isinstance(v, list) else [v]
        if not steps or any(n < 2 for n in steps):
            raise ValueError("teacher_steps must be >= 2 (or a list of such), e.g. 18 or [3, 6, 18]")
        return v

    @property
    def teacher_step_list(self) -> list[int]:
        return self.teacher_steps if isinstance(self.teacher_steps, list) else [self.teacher_steps]

    @field_validator("during_training")
    @classmethod
    def _distinct_steps(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("during_training lists a step twice; give each checkpoint step once, e.g. [100, 200]")
        return sorted(v)

    @field_validator("consistency_nfe")
    @classmethod
    def _positive(cls, v):
        if not v or any(n < 1 for n in v):
            raise ValueError("consistency_nfe must list step counts >= 1, e.g. [1, 2]")
        return v


class StagesConfig(Strict):
    teacher: StageConfig
    sct: StageConfig | None = None
    scd: StageConfig | None = None


class Recipe(Strict):
    name: str
    seed: int = 0
    executor: Literal["local", "debug", "slurm"] = "local"
    resources: ResourcesConfig = ResourcesConfig()
    sweep: dict[str, list] = {}  # a grid: {dotted.key: [values]} or {axis: [{dotted.key: value, ...}, ...]}
    variant: str = ""  # set by the sweep expansion, e.g. "network.size=S,seed=1"
    sigma_data: float = Field(0.5, gt=0)
    data: DataConfig = DataConfig()
    network: NetworkConfig = NetworkConfig()
    stages: StagesConfig
    evaluation: EvaluationConfig = EvaluationConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v) or ".." in v:
            raise ValueError(f"name {v!r} must be letters, digits, '_', '-', '.' (no path parts), e.g. digits")
        return v

    @model_validator(mode="after")
    def _guidance_needs_unconditional_teacher(self):
        scd_guidance = self.stages.scd.max_guidance if self.stages.scd else 1.0
        if max(self.evaluation.guidance, scd_guidance) > 1.0 and self.stages.teacher.label_dropout == 0:
            raise ValueError("classifier-free guidance > 1 needs a teacher trained with label dropout; "
                             "set stages.teacher.label_dropout (e.g. 0.1) or guidance: 1.0")
        if self.stages.scd and not isinstance(self.stages.scd.guidance, (int, float)) \
                and not self.network.guidance_input:
            raise ValueError("stages.scd.guidance is a range but the student cannot be told the scale; "
                             "set network.guidance_input: true or give one scale")
        return self

    @model_validator(mode="after")
    def _discrete_time_is_for_consistency_training(self):
        for method in ("teacher", "scd"):
            if self.stage(method) is not None and self.stage(method).discrete_steps is not None:
                raise ValueError(f"stages.{method}.discrete_steps: the discrete-time objective is consistency "
                                 "training; set it on stages.sct only (or remove it)")
        return self

    @model_validator(mode="after")
    def _steps_evaluated_during_training_are_checkpoints(self):
        for method in ("sct", "scd"):
            stage = self.stage(method)
            for step in self.evaluation.during_training if stage is not None else ():
                if not 0 < step < stage.steps or step % stage.checkpoint_every:
                    raise ValueError(f"evaluation.during_training: step {step} is not a checkpoint of stages.{method} "
                                     f"(multiples of checkpoint_every {stage.checkpoint_every} below steps "
                                     f"{stage.steps}); use such steps, e.g. [{stage.checkpoint_every}]")
        return self

    @model_validator(mode="after")
    def _batches_split_over_ranks(self):
        for method in ("teacher", "sct", "scd"):
            stage = self.stage(method)
            if stage is None:
                continue
            world = self.stage_resources(method).world_size
            if stage.batch_size % world:
                raise ValueError(f"stages.{method}.batch_size {stage.batch_size} does not split over {world} ranks "
                                 "(nodes x tasks_per_node); use a multiple of it")
            share = stage.batch_size // world
            if stage.micro_batch and share % stage.micro_batch:
                raise ValueError(f"stages.{method}.micro_batch {stage.micro_batch} does not divide the per-rank "
                                 f"batch {share} (batch_size / ranks); use a divisor of it")
        return self

    def stage(self, method: str) -> StageConfig | None:
        return getattr(self.stages, method)

    def stage_seed(self, method: str) -> int:
        """The seed a stage trains with: its own, or the recipe's."""
        seed = self.stage(method).seed
        return self.seed if seed is None else seed

    def stage_resources(self, method: str) -> ResourcesConfig:
        """The recipe's resources with the stage's own changes applied."""
        stage = self.stage(method)
        changes = (stage.resources if stage is not None else None) or {}
        try:
            return ResourcesConfig.model_validate({**self.resources.model_dump(), **changes})
        except ValidationError as e:
            raise ValueError(f"stages.{method}.resources: {_first_error(e)}") from None


def _field_names(model=None, seen=None) -> set[str]:
    """Every field name of the recipe schema (for "did you mean")."""
    model, seen = model or Recipe, seen if seen is not None else set()
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for sub in getattr(info.annotation, "__args__", None) or (info.annotation,):
            if isinstance(sub, type) and issubclass(sub, BaseModel) and sub not in seen:
                seen.add(sub)
                names |= _field_names(sub, seen)
    return names


def _describe(error: dict) -> str:
    import difflib

    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(error["loc"][-1]), sorted(_field_names()), n=1)
        hint = f"did you mean {close[0]}?" if close else "check its spelling against recipes/digits.yaml"
        return f"{where}: unknown field ({hint})"
    if error["type"] == "missing":
        return f"{where}: required field is missing; add it (see recipes/digits.yaml for an example)"
    if error["type"] in ("literal_error", "enum") and "input" in error:
        return f"{where}: {error['input']!r} is not allowed; {error['msg'][0].lower()}{error['msg'][1:]}"
    return f"{where}: {error['msg']}"


def _first_error(e: ValidationError) -> str:
    """The most useful error first: a misspelt key explains the 'missing' error it causes."""
    errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _describe(errors[0]) + more


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Parse and validate a recipe file (with `--set` overrides applied first); raise RecipeError with a
    one-line message on any problem."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe file; give a YAML file such as recipes/digits.yaml")
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found; give a path such as recipes/digits.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file; give a YAML recipe such as recipes/digits.yaml") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raise RecipeError(f"{path}: the file is empty; a recipe is a YAML mapping of fields, e.g. recipes/digits.yaml")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of fields, got {type(raw).__name__}; "
                          "see recipes/digits.yaml")
    raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, list(overrides), path)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{path}: {_first_error(e)}") from None


def config_hash(*parts) -> str:
    """Content hash of resolved settings: the id of a job, so a changed setting never resumes an old run."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]

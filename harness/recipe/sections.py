"""The plain sections of a recipe: data, network, optimizer, EMA, resources and the evaluation protocol. The stages
and the recipe itself are in schema.py."""
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    # double-norm: sCM's; edm2: EDM2's scale-only (unet-edm2); edm: EDM's additive DDPM++ block, no AdaGN (ddpmpp)
    modulation: Literal["double-norm", "edm2", "edm"] = "double-norm"

    @model_validator(mode="before")
    @classmethod
    def _dropout_is_per_stage(cls, data):
        if isinstance(data, dict) and "dropout_max_resolution" in data:
            raise ValueError("network.dropout_max_resolution is a stage setting now: teachers drop out in every block "
                             "(EDM2 config G), consistency models only at res <= 16 (sCM App. G.2); move it to "
                             "stages.NAME.dropout_max_resolution")
        return data

    @model_validator(mode="after")
    def _only_where_meaningful(self):
        if self.name != "unet-edm2" and self.size:
            raise ValueError(f"network.size applies to unet-edm2, not {self.name}; remove it or set network.name: "
                             "unet-edm2")
        allowed = {"unet-edm2": ("double-norm", "edm2"), "ddpmpp": ("double-norm", "edm")}.get(self.name,
                                                                                          ("double-norm",))
        if self.modulation not in allowed:
            raise ValueError(f"network.modulation {self.modulation} is not one of {self.name}'s ("
                             f"{', '.join(allowed)}); remove it or choose one of those")
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


SigmaRel = Annotated[float, Field(gt=0, lt=0.3)]  # EDM2's relative EMA length; gamma > -1/2 below 0.3


def sigma_rel_key(sigma_rel: float) -> str:
    """How an EMA length is named in checkpoints, folders and rows: 0.05 -> "0.05" (equal when equal to 6 digits)."""
    return f"{sigma_rel:g}"


def _distinct(values: list[float], field: str) -> list[float]:
    if len({sigma_rel_key(v) for v in values}) < len(values):
        raise ValueError(f"{field} lists a sigma_rel twice; give each once, e.g. [0.05, 0.1]")
    return values


class PostHocEMAConfig(Strict):
    """EDM2's post-hoc EMA (Sec. 3.2): power EMAs of these lengths, snapshotted every `snapshot_every` steps and at
    the last step (JOB/phema/), from which the EMA of any sigma_rel is reconstructed after training."""
    sigma_rel: list[SigmaRel] = Field([0.05, 0.10], min_length=1)  # EDM2 tracks 0.05 and 0.10
    snapshot_every: int = Field(gt=0)

    @field_validator("sigma_rel")
    @classmethod
    def _once(cls, v):
        return _distinct(v, "post_hoc.sigma_rel")


class EMAConfig(Strict):
    kind: Literal["power", "halflife"] = "power"
    sigma_rel: float = Field(0.05, gt=0, lt=0.3)
    halflife_images: float = Field(50_000, gt=0)
    also_sigma_rel: list[SigmaRel] = []  # power EMAs tracked beside the sampled one (in every checkpoint)
    post_hoc: PostHocEMAConfig | None = None
    # the final checkpoint is also evaluated with these EMAs (tracked, else reconstructed post hoc), per NFE
    evaluate_sigma_rel: list[SigmaRel] = []

    @field_validator("also_sigma_rel", "evaluate_sigma_rel")
    @classmethod
    def _once(cls, v, info):
        return _distinct(v, info.field_name)

    @property
    def sampled_sigma_rel(self) -> float | None:
        """The sigma_rel of the EMA that is sampled (None for a half-life EMA)."""
        return self.sigma_rel if self.kind == "power" else None

    @property
    def tracked_sigma_rel(self) -> list[float]:
        """The power EMAs kept beside the sampled one: also_sigma_rel and post_hoc's (each once, the sampled one
        not again)."""
        wanted = [*self.also_sigma_rel, *(self.post_hoc.sigma_rel if self.post_hoc else [])]
        sampled = self.sampled_sigma_rel
        skip = sigma_rel_key(sampled) if sampled is not None else None
        return list({sigma_rel_key(v): v for v in wanted if sigma_rel_key(v) != skip}.values())

    @model_validator(mode="after")
    def _evaluated_ema_exists(self):
        kept = {sigma_rel_key(v) for v in [self.sampled_sigma_rel, *self.tracked_sigma_rel] if v is not None}
        missing = [v for v in self.evaluate_sigma_rel if sigma_rel_key(v) not in kept]
        if missing and self.post_hoc is None:
            raise ValueError(f"evaluate_sigma_rel {missing[0]:g} is not tracked; add it to also_sigma_rel, or add "
                             "post_hoc: {snapshot_every: N} to reconstruct it after training")
        return self


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


# what an evaluation measures (a stage's `sampling: {guidance: {METRIC: [...]}}` names these)
METRICS = ("fid", "kid", "precision", "recall", "fd_dinov2", "class_accuracy")


class EvaluationConfig(Strict):
    """How every stage's samples are measured (how each is sampled is the stage's own `sampling:`)."""
    samples_per_class: int = Field(180, gt=0)  # unconditional data: this many samples in all
    batch_size: int = Field(512, gt=0)
    metric: Literal["fid"] = "fid"  # KID is reported beside it where reference features exist
    features: Literal["digits-classifier", "inception"] = "digits-classifier"  # inception: the paper's FID
    fid_mode: Literal["legacy_tensorflow", "clean"] = "legacy_tensorflow"  # clean-fid mode for inception
    # reference statistics: unset = computed from the data set; an .npz with mu, sigma (and feats for KID); or a
    # clean-fid name NAME-SPLIT-MODE such as cifar10-train-legacy_tensorflow
    reference: str | None = None
    fd_dinov2: bool = False  # FD_DINOv2 beside FID (EDM2's second metric); needs DINOv2 in the local torch hub
    dinov2_repo: str | None = None  # a local clone of facebookresearch/dinov2 (default: torch hub's cached copy)
    # FID's 95% interval over the generated samples (harness/evaluation/bootstrap.py): this many resamples; 0: none
    bootstrap_resamples: int = Field(200, ge=0)
    shard_size: int = Field(1000, gt=0)  # samples per shard: the unit of resuming and of splitting over ranks
    ranks: int = Field(1, gt=0)  # data-parallel generation tasks in an evaluation job (one GPU each)
    array_tasks: int = Field(1, gt=0)  # > 1: generation also split over a job array that runs before the metrics

    # how the work is split, never what a sample is (per-sample seeds): not part of an evaluation's identity
    SPLIT: ClassVar[set[str]] = {"shard_size", "ranks", "array_tasks"}

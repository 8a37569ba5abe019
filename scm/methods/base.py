"""The interface every training method implements: what a recipe stage names with `method: NAME`.

A method says which networks it trains and which trained network it only reads (its teacher), what its settings
are, how it draws the random inputs of a batch and turns them into a loss, how a trained network is sampled at a
given number of steps (and what NFE that costs), and what a training step costs in forward passes. The harness
knows methods only through this class and the registry (`scm.methods.method_class`).
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from ..trigflow import SIGMA_DATA


class SamplingError(ValueError):
    """A sampling block that does not fit its method; `field` names the key of the block at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class MethodSettings(BaseModel):
    """A method's own settings: the keys of its recipe stage besides the training loop's (steps, batch_size,
    optimizer, ema, ...). Unknown keys are refused, so a misspelt one is named with its stage."""
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingSettings(BaseModel):
    """How a stage's trained network is sampled for evaluation (a stage's `sampling:` block).

    Where a method samples at guidance scales, `guidance` may also map metrics to their own scales, as papers report
    them (sCM Table 6: FID at one scale, FD_DINOv2 at another): `guidance: {fid: [1.4], fd_dinov2: [2.0]}` samples at
    every scale named and reports each metric only at its own (`metric_guidance`); a metric not named follows fid."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    metric_guidance: dict[str, list[float]] = {}

    @model_validator(mode="before")
    @classmethod
    def _guidance_per_metric(cls, data):
        if isinstance(data, dict) and isinstance(data.get("guidance"), dict):
            per_metric = {metric: scales if isinstance(scales, list) else [scales]
                          for metric, scales in data["guidance"].items()}
            every = sorted({float(s) for scales in per_metric.values() for s in scales if isinstance(s, (int, float))})
            data = {**data, "guidance": every, "metric_guidance": per_metric}
        return data

    def reports(self, metric: str, guidance: float) -> bool:
        """Whether `metric` is reported for samples drawn at `guidance` (every metric at every scale by default)."""
        scales = self.metric_guidance.get(metric, self.metric_guidance.get("fid"))
        return scales is None or any(abs(guidance - s) < 1e-9 for s in scales)

    def at_toy_scale(self) -> "SamplingSettings":
        """What `--smoke` samples with instead: the same settings, with what only costs time made small."""
        return self


def ends(values: list) -> list:
    """A long sweep (Fig. 7's guidance scales) at toy scale (`at_toy_scale`): its first and last value."""
    return values if len(values) <= 2 else [values[0], values[-1]]


@dataclass(frozen=True)
class Setting:
    """One way to sample a trained network; each gives one row of metrics.

    passes: network evaluations per sample without classifier-free guidance; cfg: the CFG scale applied while
    sampling (1: none); told: the scale given to a network that takes it as an input (None: not told); guidance:
    the scale a results row reports (a distilled-in scale for a student that samples without guidance)."""
    sampler: str
    steps: int
    passes: int
    guidance: float = 1.0
    cfg: float = 1.0
    told: float | None = None

    @property
    def name(self) -> str:
        cfg = f"-cfg-{self.cfg:g}" if self.cfg != 1.0 else ""
        told = f"-guidance-{self.told:g}" if self.told is not None else ""
        return f"{self.sampler}-{self.steps}{cfg}{told}"

    def nfe(self, conditional: bool) -> int:
        """Network evaluations per sample; classifier-free guidance doubles them (conditional + unconditional)."""
        return self.passes * (2 if self.cfg != 1.0 and conditional else 1)


@dataclass(frozen=True)
class Trained:
    """A network a method trains. start: "init" = the stage's `init:` weights (fresh where it names none),
    "teacher" = the weights of the stage's teacher."""
    role: str
    start: str = "init"


@dataclass
class Networks:
    """What a loss is computed with: the trained networks by role (the first is the one sampled), the method's own
    trained modules (e.g. the adaptive weight w(t)), and the teacher it reads (None without one)."""
    trained: dict[str, nn.Module]
    modules: dict[str, nn.Module]
    teacher: nn.Module | None = None

    @property
    def net(self) -> nn.Module:
        return next(iter(self.trained.values()))


class Method(ABC):
    """Subclass, set the class attributes, implement the abstract methods; register it by name (built-ins), by the
    entry-point group `scm_bench.methods`, or write `method: module:Class` in a recipe."""

    name: ClassVar[str]  # what a recipe writes as `method:`
    label: ClassVar[str]  # how tables and plots name it
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    Sampling: ClassVar[type[SamplingSettings]]
    reads_teacher: ClassVar[bool] = False  # needs `teacher:`: a trained network it reads and never changes
    networks: ClassVar[tuple[Trained, ...]] = (Trained("net"),)  # what it trains; the first is sampled
    # diagnostics that make a step diverged when non-finite, checked before the loss: {diagnostic: term name}
    watched: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: MethodSettings | None = None, sigma_data: float = SIGMA_DATA):
        self.settings = settings if settings is not None else self.Settings()
        self.sigma_data = sigma_data

    # ---- training -------------------------------------------------------------------------------------------------

    def takes_guidance(self) -> bool:
        """Whether its networks take the guidance scale s as an input (sCD on ImageNet 512)."""
        return False

    def takes_interval(self) -> bool:
        """Whether its networks take a second time r (MeanFlow's average velocity u(z, r, t) over [r, t])."""
        return False

    def teacher_guidance(self) -> float:
        """The largest classifier-free guidance scale it applies to its teacher (> 1 needs label dropout there)."""
        return 1.0

    def auxiliary_modules(self) -> dict[str, nn.Module]:
        """Modules it trains beside its networks, with the first network's optimizer (built after the networks)."""
        return {}

    @abstractmethod
    def draw(self, shape: tuple[int, ...], generator: torch.Generator, device) -> object:
        """The random inputs of one global batch of `shape`, drawn from `generator`; the result must support
        `draws[slice]`, so a batch split over ranks and accumulation passes sees the same draws."""

    @abstractmethod
    def loss(self, nets: Networks, x0: torch.Tensor, labels, draws, step: int) -> tuple[torch.Tensor, dict]:
        """(loss, diagnostics) of one (micro-)batch; diagnostics are detached scalars for the log."""

    @abstractmethod
    def cost_per_step(self) -> float:
        """Work per sample and training step, in forward passes of the network (for `scm-bench plan`)."""

    # ---- sampling -------------------------------------------------------------------------------------------------

    @abstractmethod
    def sample_settings(self, sampling: SamplingSettings) -> list[Setting]:
        """Every way its `sampling:` block asks the trained network to be sampled; SamplingError if the block does
        not fit the method (e.g. guidance scales for a network without a guidance input)."""

    def later_noises(self, setting: Setting) -> int:
        """Standard-normal tensors per sample that sampling needs beyond the starting noise z (multistep)."""
        return 0

    @abstractmethod
    def sample(self, net: nn.Module, z: torch.Tensor, labels, setting: Setting, noises: list) -> torch.Tensor:
        """Samples in data space from z ~ N(0, sd^2 I) (and `later_noises` standard-normal tensors)."""

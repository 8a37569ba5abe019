"""The recipe schema: named stages, each trained by a method (`method:`), with references to the stages it starts
from (`init:`) and reads (`teacher:`); the graph they form is checked before anything runs.

A stage's keys are the training loop's (steps, batch_size, optimizer, ema, ...; `Stage` below), its `sampling:`
block and the method's own settings (`Method.Settings`, e.g. sCT's tangent), all side by side:

    stages:
      teacher: {method: diffusion, steps: 1200, p_mean: -0.8, sampling: {steps: 18}}
      student: {method: sct, init: teacher, steps: 400, tangent: {warmup_steps: 200}}
"""
import re
from typing import Literal

from pydantic import (Field, SerializeAsAny, ValidationError, field_validator, model_serializer, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from scm.methods import (Method, MethodSettings, SamplingError, SamplingSettings, UnknownMethod, available,
                         method_class)

from .graph import check_graph
from .refs import StageRef
from .sections import (METRICS, DataConfig, EMAConfig, EvaluationConfig, NetworkConfig, OptimizerConfig,
                       ResourcesConfig, Strict)

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _error(loc: tuple, message: str, value) -> ValidationError:
    """A validation error at `loc` (relative to the model being validated) with our own one-line message."""
    detail = InitErrorDetails(type=PydanticCustomError("recipe", "{message}", {"message": message}), loc=loc,
                              input=value)
    return ValidationError.from_exception_data("Stage", [detail])


def _within(prefix: tuple, error: ValidationError) -> ValidationError:
    """The same errors, located under `prefix`."""
    details = [InitErrorDetails(type=PydanticCustomError(e["type"], "{message}", {"message": e["msg"]}),
                                loc=(*prefix, *e["loc"]), input=e.get("input")) for e in error.errors()]
    return ValidationError.from_exception_data("Stage", details)


class Stage(Strict):
    """One training job per sweep variant. Besides these keys, the method's own settings (`settings`)."""
    method: str  # a registry name (scm.methods), an installed entry point, or module:Class
    init: StageRef | None = None  # where its weights start (the EMA of that stage's network); unset: fresh
    teacher: StageRef | None = None  # the trained network it reads (methods with reads_teacher)
    steps: int = Field(gt=0)
    batch_size: int = Field(128, gt=0)  # global: split over nodes x tasks_per_node ranks
    micro_batch: int | None = Field(None, gt=0)  # per rank and pass; gradient accumulation when below the share
    optimizer: OptimizerConfig = OptimizerConfig()
    ema: EMAConfig = EMAConfig()
    dropout: float = Field(0.0, ge=0, lt=1)
    # dropout only in blocks at resolution <= this (unet-edm2, ddpmpp; sCM App. G.2: the consistency models, 16);
    # unset: in every block (EDM2 config G, the teachers)
    dropout_max_resolution: int | None = Field(None, gt=0)
    grad_clip: float | None = Field(None, gt=0)  # clip the global gradient norm of every network to this; unset: none
    label_dropout: float = Field(0.0, ge=0, le=1)
    checkpoint_every: int = Field(500, gt=0)
    # a non-finite loss, tangent or gradient: end the job as diverged ("stop"), or skip that step ("skip") and end
    # it as diverged only after more than max_skipped_steps skips
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_skipped_steps: int = Field(100, ge=0)
    # this stage's training seed (default: the recipe's): a sweep over it repeats a stage from one shared teacher
    seed: int | None = Field(None, ge=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast for the losses (forward, JVP); fp16 scales grads
    resources: dict | None = None  # this stage's changes to the recipe's resources, e.g. {gpus_per_node: 8}
    # FID over training: also evaluated at these checkpoint steps (multiples of checkpoint_every below steps)
    during_training: list[int] = []
    sampling: SerializeAsAny[SamplingSettings] = SamplingSettings()  # the method's sampling block
    settings: SerializeAsAny[MethodSettings] = MethodSettings()  # the method's own keys

    @model_validator(mode="wrap")
    @classmethod
    def _method_keys(cls, data, handler):
        """Split the stage's keys: the training loop's go to this model, `sampling` and the rest to the method's
        own models (so an error names stages.NAME.FIELD whichever model holds the field)."""
        if not isinstance(data, dict) or isinstance(data.get("settings"), MethodSettings):
            return handler(data)  # not a mapping (pydantic says so), or a stage already split
        if not isinstance(data.get("method"), str):
            raise _error(("method",), f"required: the stage's method, one of {', '.join(available())} (or "
                                      "module:Class); add e.g. method: diffusion", data.get("method"))
        try:
            method = method_class(data["method"])
        except UnknownMethod as error:
            raise _error(("method",), str(error), data["method"]) from None
        # a method key set to null takes its default: a sweep that changes a stage's method unsets the old one's keys
        clash = sorted(set(method.Settings.model_fields) & set(cls.model_fields))
        if clash:  # the training loop would take them: the method would never see its own value
            raise _error(("method",), f"the settings of {data['method']} reuse the stage keys {', '.join(clash)}; "
                                      "rename them in the method", data["method"])
        own = {k: v for k, v in data.items() if k not in cls.model_fields and v is not None}
        sampling = data.get("sampling") if data.get("sampling") is not None else {}
        try:
            settings = method.Settings.model_validate(own)
        except ValidationError as error:
            raise _within((), error) from None
        try:
            sampling = sampling if isinstance(sampling, SamplingSettings) else method.Sampling.model_validate(sampling)
        except ValidationError as error:
            raise _within(("sampling",), error) from None
        try:
            names = [setting.name for setting in method(settings).sample_settings(sampling)]
        except SamplingError as error:
            raise _error(("sampling", error.field), str(error), data.get("sampling")) from None
        except ValueError as error:
            raise _error(("sampling",), str(error), data.get("sampling")) from None
        unknown = sorted(set(sampling.metric_guidance) - set(METRICS))
        if unknown:
            raise _error(("sampling", "guidance"), f"no metric {unknown[0]!r}; guidance per metric names some of "
                                                   f"{', '.join(METRICS)}", data.get("sampling"))
        if not names or len(set(names)) < len(names):  # each setting's samples are kept under its name
            raise _error(("sampling",), f"it gives {'no' if not names else 'repeated'} sampling settings "
                                        f"({', '.join(names) or 'none'}); give each once", data.get("sampling"))
        common = {k: v for k, v in data.items() if k in cls.model_fields}
        return handler({**common, "sampling": sampling, "settings": settings})

    @model_serializer(mode="wrap")
    def _flat(self, handler):
        """Written back as the recipe has it: the method's keys beside the training loop's."""
        data = handler(self)
        return {**{k: v for k, v in data.items() if k != "settings"}, **data.get("settings", {})}

    @field_validator("during_training")
    @classmethod
    def _distinct_steps(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("during_training lists a step twice; give each checkpoint step once, e.g. [100, 200]")
        return sorted(v)

    @property
    def method_class(self) -> type[Method]:
        return method_class(self.method)

    def make_method(self, sigma_data: float) -> Method:
        return self.method_class(self.settings, sigma_data)


class Recipe(Strict):
    name: str
    seed: int = 0
    executor: Literal["local", "debug", "slurm"] = "local"
    resources: ResourcesConfig = ResourcesConfig()
    sweep: dict[str, list] = {}  # a grid: {dotted.key: [values]} or {axis: [{dotted.key: value, ...}, ...]}
    variant: str = ""  # set by the sweep expansion, e.g. "network.size=S,seed=1"
    smoke: bool = False  # set by --smoke: the recipe at toy scale (its outside stages are taken at toy scale too)
    sigma_data: float = Field(0.5, gt=0)
    data: DataConfig = DataConfig()
    network: NetworkConfig = NetworkConfig()
    stages: dict[str, Stage] = Field(min_length=1)
    evaluation: EvaluationConfig = EvaluationConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v):
        if not SAFE_NAME.fullmatch(v) or ".." in v:
            raise ValueError(f"name {v!r} must be letters, digits, '_', '-', '.' (no path parts), e.g. digits")
        return v

    @field_validator("stages")
    @classmethod
    def _safe_stage_names(cls, v):
        bad = next((name for name in v if not SAFE_NAME.fullmatch(name) or ".." in name), None)
        if bad is not None:
            raise ValueError(f"stage name {bad!r} must be letters, digits, '_', '-', '.', e.g. teacher")
        return v

    @model_validator(mode="after")
    def _dropout_resolution_where_it_applies(self):
        if self.network.name in ("unet-edm2", "ddpmpp"):
            return self
        stage = next((name for name, s in self.stages.items() if s.dropout_max_resolution is not None), None)
        if stage is not None:
            raise ValueError(f"stages.{stage}.dropout_max_resolution applies to unet-edm2 and ddpmpp, not "
                             f"{self.network.name}; remove it")
        return self

    @model_validator(mode="after")
    def _references_form_a_graph(self):
        check_graph(self)
        return self

    def stage_seed(self, name: str) -> int:
        """The seed a stage trains with: its own, or the recipe's."""
        seed = self.stages[name].seed
        return self.seed if seed is None else seed

    def stage_resources(self, name: str) -> ResourcesConfig:
        """The recipe's resources with the stage's own changes applied."""
        changes = self.stages[name].resources or {}
        try:
            return ResourcesConfig.model_validate({**self.resources.model_dump(), **changes})
        except ValidationError as e:
            raise ValueError(f"stages.{name}.resources: {e.errors()[0]['msg']}") from None

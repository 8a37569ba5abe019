"""`--smoke`: any recipe at toy scale on a CPU, end to end, in a couple of minutes.

Every stage, sweep variant, network family, precision and tangent setting of the recipe is kept; what only
costs time is shrunk: two steps per stage at batch 4, a narrow network with one block per level, a small synthetic
data set of the recipe's shape (latents decoded by a tiny random VAE), 2 samples per class for evaluation in the
digits classifier's feature space (no FD_DINOv2, no generation arrays: tests/test_slurm.py runs those), each
stage's sampling at its method's toy scale (`SamplingSettings.at_toy_scale`: an ODE teacher at 2 steps), one local
task per job, and bf16 where the recipe says fp16 (fp16 autocast is emulated on a CPU and 2-3x slower here;
tests/test_precision.py covers fp16 with its loss scaler). Stages of other recipes it starts from are taken at toy
scale too. The recipe is named `<name>-smoke`, apart from real runs.
"""
from ..data.prepared import PREPARED_DATASETS
from .load import validate
from .refs import CheckpointFile
from .schema import Recipe
from .sweep import entry_label
from .text import RecipeError

SMOKE_STEPS, SMOKE_BATCH, SMOKE_RESOLUTION, SMOKE_CLASSES = 2, 4, 16, 10
# what a smoke run fixes: sweep entries that set these are dropped (a size sweep still sweeps sizes)
FIXED = ("data", "resources", "executor", "network.channels", "network.blocks_per_level",
         "evaluation.samples_per_class", "evaluation.batch_size", "evaluation.features", "evaluation.reference",
         "evaluation.fd_dinov2", "evaluation.array_tasks")
# a stage's fields a smoke run fixes (micro_batch and precision are shrunk, not fixed: see _smoke_value)
FIXED_STAGE_FIELDS = ("steps", "batch_size", "checkpoint_every", "resources", "during_training", "sampling.steps")
SHRUNK_NETWORKS = ("unet-edm2", "ddpmpp")  # narrowed to 32 channels; toy networks keep their width


def _fixed(key: str, network: str) -> bool:
    if key == "network.channels" and network not in SHRUNK_NETWORKS:  # toy widths are kept, sweeps of them too
        return False
    parts = key.split(".")
    if parts[0] == "stages" and len(parts) >= 3:
        field = ".".join(parts[2:])
        return any(field == f or field.startswith(f + ".") for f in FIXED_STAGE_FIELDS)
    return any(key == f or key.startswith(f + ".") for f in FIXED)


def replaced_by_smoke(keys: list[str], network: str) -> list[str]:
    """The `--set` keys whose values a smoke run does not use (it fixes them at toy scale)."""
    return [key for key in keys if _fixed(key, network)]


def _smoke_value(key: str, value):
    """A sweep value at toy scale: a micro-batch still accumulates (2 passes); fp16 becomes bf16 (see above)."""
    if key.endswith(".micro_batch") and value is not None:
        return SMOKE_BATCH // 2
    if key.endswith(".precision") and value == "fp16":
        return "bf16"
    return value


def _smoke_sweep(sweep: dict, network: str) -> dict:
    kept = {}
    for axis, values in sweep.items():
        if all(isinstance(v, dict) for v in values):
            kept[axis] = [{"label": entry_label(entry), **{k: _smoke_value(k, v) for k, v in entry.items()
                                                           if not _fixed(k, network) and k != "label"}}
                          for entry in values]
        elif not _fixed(axis, network):
            kept[axis] = [_smoke_value(axis, v) for v in values]
    return kept


def _smoke_data(data: dict) -> dict:
    if data["name"] in ("digits", "folder", "synthetic"):
        return data  # already small (and digits is real and on disk)
    (channels, _, _), classes = PREPARED_DATASETS[data["name"]]
    latents = data["name"].endswith("latents")
    return {"name": "synthetic", "shape": [channels, SMOKE_RESOLUTION, SMOKE_RESOLUTION], "count": 64,
            "num_classes": min(classes, SMOKE_CLASSES), "latents": latents,
            "class_conditional": data["class_conditional"],
            "vae": "tiny-random" if latents else data["vae"]}


def _smoke_stage(stage) -> dict:
    """A stage at toy scale: two steps at batch 4 (2 passes where it accumulates), sampled at toy scale, evaluated
    during training at step 1 where it asks for FID over training."""
    if any(isinstance(ref, CheckpointFile) for ref in (stage.init, stage.teacher)):
        raise RecipeError("a stage starts from a checkpoint file, whose network --smoke cannot shrink; run "
                          "without --smoke, or start it from a stage instead")
    raw = stage.model_dump(mode="json", exclude_unset=True)  # a sweep may still change its method
    raw.update(steps=SMOKE_STEPS, batch_size=SMOKE_BATCH,
               micro_batch=SMOKE_BATCH // 2 if stage.micro_batch is not None else None,
               checkpoint_every=1 if stage.during_training else SMOKE_STEPS, resources=None,
               during_training=[1] if stage.during_training else [],
               precision="bf16" if stage.precision == "fp16" else stage.precision,
               sampling=stage.sampling.at_toy_scale().model_dump(mode="json"))
    return raw


def smoke_recipe(recipe: Recipe) -> Recipe:
    """The recipe at toy scale (see the module docstring); validated like any recipe."""
    raw = recipe.model_dump(mode="json", exclude={"variant", "stages"})
    raw.update(name=f"{recipe.name}-smoke", executor="local", resources={"cpus_per_task": 1, "time_min": 30},
               data=_smoke_data(raw["data"]), smoke=True,
               stages={name: _smoke_stage(stage) for name, stage in recipe.stages.items()})
    if raw["network"]["name"] in SHRUNK_NETWORKS:
        raw["network"].update(channels=32, blocks_per_level=1)
    raw["evaluation"].update(samples_per_class=2, batch_size=64, features="digits-classifier", reference=None,
                             fd_dinov2=False, array_tasks=1)
    raw["sweep"] = _smoke_sweep(raw["sweep"], raw["network"]["name"])
    return validate(raw, f"{recipe.name} --smoke")

"""`--smoke`: any recipe at toy scale on a CPU, end to end, in a couple of minutes.

Every stage, sweep variant, network family, precision and tangent setting of the recipe is kept; what only
costs time is shrunk: two steps per stage at batch 4, a narrow network with one block per level, a small synthetic
data set of the recipe's shape (latents decoded by a tiny random VAE), 2 samples per class for evaluation in the
digits classifier's feature space (no FD_DINOv2, no generation arrays: tests/test_slurm.py runs those), one local
task per job, and bf16 where the recipe says fp16 (fp16 autocast is
emulated on a CPU and 2-3x slower here; tests/test_precision.py covers fp16 with its loss scaler). Runs land under
`<name>-smoke`, apart from real runs.
"""
from pydantic import ValidationError

from .recipe import PREPARED_DATASETS, Recipe, RecipeError, _first_error
from .sweep import entry_label

SMOKE_STEPS, SMOKE_BATCH, SMOKE_RESOLUTION, SMOKE_CLASSES = 2, 4, 16, 10
# what a smoke run fixes: sweep entries that set these are dropped (a size sweep still sweeps sizes)
FIXED = ("data", "resources", "executor", "network.channels", "network.blocks_per_level",
         "evaluation.samples_per_class", "evaluation.teacher_steps", "evaluation.batch_size",
         "evaluation.features", "evaluation.reference", "evaluation.fd_dinov2", "evaluation.array_tasks",
         "evaluation.during_training")
FIXED_STAGE_FIELDS = ("steps", "batch_size", "checkpoint_every", "resources")  # micro_batch: shrunk below
SHRUNK_NETWORKS = ("unet-edm2", "ddpmpp")  # narrowed to 32 channels; toy networks keep their width


def _fixed(key: str, network: str) -> bool:
    if key == "network.channels" and network not in SHRUNK_NETWORKS:  # toy widths are kept, sweeps of them too
        return False
    parts = key.split(".")
    if parts[0] == "stages" and len(parts) >= 3:
        return parts[2] in FIXED_STAGE_FIELDS
    return any(key == f or key.startswith(f + ".") for f in FIXED)


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


def smoke_recipe(recipe: Recipe) -> Recipe:
    """The recipe at toy scale (see the module docstring); validated like any recipe."""
    raw = recipe.model_dump(mode="json", exclude={"variant"})
    raw["name"] = f"{recipe.name}-smoke"
    raw["executor"] = "local"
    raw["resources"] = {"cpus_per_task": 1, "time_min": 30}
    raw["data"] = _smoke_data(raw["data"])
    if raw["network"]["name"] in SHRUNK_NETWORKS:
        raw["network"].update(channels=32, blocks_per_level=1)
    over_training = bool(raw["evaluation"]["during_training"])  # FID over training: evaluated at step 1 too
    for stage in raw["stages"].values():
        if stage is not None:
            accumulate = stage["micro_batch"] is not None  # keep exercising gradient accumulation where it is used
            stage.update(steps=SMOKE_STEPS, batch_size=SMOKE_BATCH, micro_batch=SMOKE_BATCH // 2 if accumulate else None,
                         checkpoint_every=1 if over_training else SMOKE_STEPS, resources=None,
                         precision="bf16" if stage["precision"] == "fp16" else stage["precision"])
    several = isinstance(raw["evaluation"]["teacher_steps"], list) and len(raw["evaluation"]["teacher_steps"]) > 1
    raw["evaluation"].update(samples_per_class=2, teacher_steps=[2, 3] if several else 2, batch_size=64, features="digits-classifier",
                             reference=None, fd_dinov2=False, array_tasks=1, during_training=[1] if over_training else [])
    raw["sweep"] = _smoke_sweep(raw["sweep"], raw["network"]["name"])
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{recipe.name} --smoke: {_first_error(e)}") from None

"""The recipe layer: a YAML recipe read and validated (schema, text, load), expanded over its sweep, scaled down
for --smoke, and planned into typed jobs (jobs, planner); the run manifest that records what a run planned."""
from .jobs import Checkpoint, EvalJob, Plan, TrainJob, config_hash
from .load import load_recipe, read_raw, validate
from .manifest import RunManifest, check_owner, manifests, read_manifest, write_manifest
from .planner import evaluation_resources, plan_jobs
from .schema import Recipe, Stage
from .sections import DataConfig, EvaluationConfig, NetworkConfig, ResourcesConfig
from .smoke import replaced_by_smoke, smoke_recipe
from .sweep import axis_values, expand_sweep
from .text import RecipeError

__all__ = ["Checkpoint", "EvalJob", "Plan", "TrainJob", "config_hash", "load_recipe", "read_raw", "validate",
           "RunManifest", "check_owner", "manifests", "read_manifest", "write_manifest", "evaluation_resources",
           "plan_jobs", "Recipe", "Stage", "DataConfig", "EvaluationConfig", "NetworkConfig", "ResourcesConfig",
           "replaced_by_smoke", "smoke_recipe", "axis_values", "expand_sweep", "RecipeError"]

"""`scm-bench run`: a recipe planned, checked, recorded in its run manifest, then run."""
from pathlib import Path

from .. import store
from ..recipe.jobs import Plan
from ..recipe.manifest import read_manifest, write_manifest
from ..recipe.planner import plan_jobs
from ..recipe.schema import Recipe
from ..recipe.text import RecipeError
from ..store.runs import check_owner
from .launch import run_plan
from .preflight import preflight
from .status import live_launcher


def _not_followed_already(runs_root: Path, name: str, source: Path) -> None:
    """Two launchers of one run would submit the same jobs twice and fight over its manifest."""
    try:
        launcher = live_launcher(read_manifest(runs_root, name))
    except RecipeError:  # an unreadable manifest is rewritten by this run
        return
    if launcher is not None:
        raise RecipeError(f"another `scm-bench run` (pid {launcher.pid}, started {launcher.started}) is following "
                          f"this run; wait for it to end, or stop it first: scm-bench cancel {source}")


def prepare_run(recipe: Recipe, source: Path, runs_root: Path) -> Plan:
    """The plan, after every check that needs no writing: the recipe's name is its own, the data and the files
    the evaluation needs are here, no job's folder holds another network's checkpoints."""
    check_owner(runs_root, recipe.name, source)
    _not_followed_already(runs_root, recipe.name, source)
    plan = plan_jobs(recipe, runs_root)
    preflight(plan)
    return plan


def run_recipe(recipe: Recipe, source: Path, runs_root: Path, executor: str, progress_view, stop=None,
               overrides: list[str] = (), wait: bool = True, launcher_pid: int | None = None) -> list[dict]:
    """Plan, check, write the manifest (runs/NAME/run.json) and run; every metrics row (with `wait`).
    `launcher_pid`: the process that follows the run, recorded so that `scm-bench cancel` can stop it."""
    plan = prepare_run(recipe, source, runs_root)
    store.ensure_writable(Path(runs_root) / recipe.name)
    write_manifest(runs_root, source, plan, list(overrides), recipe.smoke, executor, launcher_pid)
    return run_plan(plan, executor, Path(runs_root) / recipe.name / "logs", progress_view, stop, wait)

"""The run manifest, runs/<recipe name>/run.json: the recipe file a run used, the overrides and toy scale it ran
with, and the plan (every typed job) it made. `status` and `cancel` read it, and `report` reads what it evaluated
(store/runs.py), so they find exactly what `run` made, with the same `--set`s, without planning again.

One recipe name, one manifest: a second recipe file with the same `name:` is refused (it would take over the
first one's results) with the fix, instead of being misread as "no finished jobs".
"""
import socket
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from ..store import read_json, write_json
from ..store.runs import check_owner, manifest_path, manifests
from .jobs import Frozen, Plan
from .text import RecipeError

__all__ = ["Launcher", "RunManifest", "check_owner", "manifest_path", "manifests", "read_manifest", "write_manifest"]


class Launcher(Frozen):
    """The `scm-bench run` process that follows a local run (cancel stops it, and so what would come next)."""
    pid: int
    host: str
    executor: str
    started: str


class RunManifest(Frozen):
    recipe: str  # the recipe's name (runs/NAME/)
    source: str  # the recipe file, resolved
    overrides: list[str] = []
    smoke: bool = False
    plan: Plan
    launcher: Launcher | None = None
    written: str


def read_manifest(runs_root: Path, name: str) -> RunManifest | None:
    """The manifest of the recipe named `name`, or None when it never ran under this runs folder."""
    path = manifest_path(runs_root, name)
    data = read_json(path)
    if data is None:
        return None
    try:
        return RunManifest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        hint = "; the run's methods must be importable here" if "method" in first["msg"] else ""
        raise RecipeError(f"{path}: cannot be read ({where}: {first['msg']}{hint}); run the recipe again to "
                          "rewrite it") from None
    except ValueError as error:
        raise RecipeError(f"{path}: cannot be read ({str(error).splitlines()[0]}); run the recipe again to "
                          "rewrite it") from None


def write_manifest(runs_root: Path, source: Path, plan: Plan, overrides: list[str], smoke: bool,
                   executor: str, launcher_pid: int | None = None) -> RunManifest:
    """Record the run; `launcher_pid`: the `scm-bench run` process that follows it (cancel stops it)."""
    launcher = None if launcher_pid is None else Launcher(
        pid=launcher_pid, host=socket.gethostname(), executor=executor,
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    manifest = RunManifest(recipe=plan.recipe, source=str(Path(source).resolve()), overrides=list(overrides),
                           smoke=smoke, plan=plan, launcher=launcher,
                           written=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json(manifest_path(runs_root, plan.recipe), manifest.model_dump(mode="json"))
    return manifest

"""The run manifest, runs/<recipe name>/run.json: the recipe file a run used, the overrides and toy scale it ran
with, and the plan (every typed job) it made. `report`, `status` and `cancel` read it, so they find exactly what
`run` made, with the same `--set`s, without planning again.

One recipe name, one manifest: a second recipe file with the same `name:` is refused (it would take over the
first one's results) with the fix, instead of being misread as "no finished jobs".
"""
import socket
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from ..store import read_json, write_json
from .jobs import Frozen, Plan
from .text import RecipeError

MANIFEST = "run.json"


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


def manifest_path(runs_root: Path, name: str) -> Path:
    return Path(runs_root) / name / MANIFEST


def read_manifest(runs_root: Path, name: str) -> RunManifest | None:
    """The manifest of the recipe named `name`, or None when it never ran under this runs folder."""
    path = manifest_path(runs_root, name)
    data = read_json(path)
    if data is None:
        return None
    try:
        return RunManifest.model_validate(data)
    except (ValidationError, ValueError) as error:
        raise RecipeError(f"{path}: cannot be read ({str(error).splitlines()[0]}); run the recipe again to "
                          "rewrite it") from None


def check_owner(runs_root: Path, name: str, source: Path) -> None:
    """Refuse a recipe file whose name already belongs to another file's runs."""
    existing = read_json(manifest_path(runs_root, name))
    owner = (existing or {}).get("source")
    if owner and Path(owner) != Path(source).resolve():
        raise RecipeError(f"{source}: the recipe name {name!r} already belongs to the runs of {owner} "
                          f"({manifest_path(runs_root, name)}); give this recipe its own name: (e.g. name: "
                          f"{name}-copy), or use another --runs-dir")


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


def manifests(runs_root: Path) -> list[str]:
    """The names of every recipe with a manifest under the runs folder."""
    return sorted(path.parent.name for path in Path(runs_root).glob(f"*/{MANIFEST}"))

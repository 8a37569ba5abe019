"""Named baseline sets: results/baselines/NAME.csv, one file per set, its name the file's stem. The paper's
(sCM_paper), other methods' (competitors) and any a user saved from a run (`scm-bench baselines save`: the same
columns as the paper's, plus provenance). Reading one checks its columns; writing one is atomic and never replaces a
set unless asked. And which --compare names are runs and which are sets."""
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import store
from ..store.runs import RunIndex, read_index
from .paper import BASELINE_COLUMNS, BaselineError, read_baseline_file
from .rows import OURS, find_manifest, source_label

SUFFIX = ".csv"
SET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a safe file stem: no path, no hidden file
RUN_FILES = (".yaml", ".yml")


@dataclass(frozen=True, eq=False)
class BaselineSet:
    """One stored set: its name (the file's stem), its file and its rows (checked: every baseline column)."""
    name: str
    path: Path
    rows: pd.DataFrame

    @property
    def saved_from_run(self) -> bool:
        """Saved by `scm-bench baselines save` (its rows name the recipe they came from), not published numbers."""
        return "recipe" in self.rows and self.rows.recipe.notna().any()

    @property
    def datasets(self) -> list[str]:
        return sorted(self.rows.dataset.dropna().unique())

    @property
    def metrics(self) -> list[str]:
        return sorted(self.rows.metric.dropna().unique())

    @property
    def source(self) -> str:
        """Where the numbers come from, in a few words: what the rows' sources share, else the first and a count."""
        sources = list(dict.fromkeys(self.rows.source.dropna().astype(str)))
        if len(sources) <= 1:
            return sources[0] if sources else ""
        shared = os.path.commonprefix(sources)
        shared = shared[:shared.rfind(" ")].rstrip(" ,;(") if " " in shared else ""
        return shared or f"{sources[0]} (and {len(sources) - 1} more)"


def column_or(rows: pd.DataFrame, name: str, default) -> pd.Series:
    """The rows' column `name` (a saved set's provenance), `default` (a value or a series) where empty or absent."""
    fallback = default if isinstance(default, pd.Series) else pd.Series(default, index=rows.index)
    return rows[name].astype(object).where(rows[name].notna(), fallback) if name in rows else fallback


def check_set_name(name: str) -> str:
    """A set's name is a safe file stem: letters, digits, '_', '-', '.' (not first), at most 100 characters."""
    if name.lower().endswith(SUFFIX) and SET_NAME.fullmatch(name):
        raise BaselineError(f"baseline set name {name!r} ends in {SUFFIX}; give the name without it "
                            f"(e.g. {name[:-len(SUFFIX)]})")
    if not SET_NAME.fullmatch(name):
        raise BaselineError(f"baseline set name {name!r} is not a safe file name; use letters, digits, '_', '-' and "
                            "'.' only (not first), e.g. digits-v1")
    if name == OURS:
        raise BaselineError(f"baseline set name {name!r} is the report's label of the run's own rows; choose "
                            "another name, e.g. ours-v1")
    return name


def set_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{check_set_name(name)}{SUFFIX}"


def set_names(folder: Path) -> list[str]:
    """The names of the sets in the folder (files whose stem is a valid set name)."""
    return sorted(path.stem for path in Path(folder).glob(f"*{SUFFIX}") if SET_NAME.fullmatch(path.stem))


def read_set_file(path: Path) -> BaselineSet:
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"baseline file {path} not found; check the path (scm-bench baselines list shows the "
                            "stored sets)")
    return BaselineSet(name=path.stem, path=path, rows=read_baseline_file(path))


def read_set(folder: Path, name: str) -> BaselineSet:
    """The set NAME of the folder; an unknown name is an error that lists the names there."""
    path = set_path(folder, name)
    if not path.is_file():
        names = ", ".join(set_names(folder)) or "none"
        raise BaselineError(f"no baseline set {name!r} in {folder}; use one of: {names}")
    return read_set_file(path)


def list_sets(folder: Path) -> list[BaselineSet]:
    return [read_set(folder, name) for name in set_names(folder)]


def write_set(folder: Path, name: str, rows: pd.DataFrame, overwrite: bool = False) -> Path:
    """Write rows (the baseline columns first) as the set NAME, atomically; an existing set only with overwrite."""
    path = set_path(folder, name)
    if path.exists() and not overwrite:
        raise BaselineError(f"baseline set {name!r} exists ({path}); choose another name, or add --overwrite to "
                            "replace it")
    missing = [column for column in BASELINE_COLUMNS if column not in rows]
    if missing:
        raise BaselineError(f"rows for baseline set {name!r} lack the columns {', '.join(missing)}")
    ordered = rows[[*BASELINE_COLUMNS, *[c for c in rows.columns if c not in BASELINE_COLUMNS]]]
    store.write_bytes_atomic(path, ordered.to_csv(index=False, float_format="%.8g").encode())
    return path


@dataclass(frozen=True)
class Comparisons:
    """What --compare named: runs (the names as typed, and their manifests) and stored sets; labels: each name as
    typed -> the source label its rows carry in the table."""
    runs: list[str]
    manifests: list[RunIndex]
    sets: list[BaselineSet]
    labels: dict[str, str]


def _run_or_set(name: str, runs_root: Path, smoke: bool, folder: Path) -> RunIndex | BaselineSet:
    """A recipe file (.yaml) is a run, a .csv file a set; a bare name is the run of that recipe under runs_root or
    the set of that name in folder, and an error when it is both or neither."""
    if name.endswith(RUN_FILES):
        return find_manifest(name, runs_root, smoke)
    if name.endswith(SUFFIX):
        return read_set_file(Path(name))
    run_name = name + ("-smoke" if smoke and not name.endswith("-smoke") else "")
    is_run = read_index(runs_root, run_name) is not None
    is_set = bool(SET_NAME.fullmatch(name)) and (Path(folder) / f"{name}{SUFFIX}").is_file()
    if is_run and is_set:
        raise BaselineError(f"both a run ({Path(runs_root) / run_name}) and a baseline set "
                            f"({Path(folder) / (name + SUFFIX)}) are named so; give the recipe file for the run or "
                            "the set's .csv file")
    if is_set:
        return read_set(folder, name)
    if is_run:
        return find_manifest(name, runs_root, smoke)
    sets = ", ".join(set_names(folder)) or "none"
    raise BaselineError(f"no run of {run_name} under {runs_root} and no baseline set {name!r} in {folder} "
                        f"(sets: {sets}); run the recipe first, or check the name (scm-bench baselines list)")


def resolve_compare(names, runs_root: Path, smoke: bool, folder: Path) -> Comparisons:
    """Each --compare name as a run or a set (see _run_or_set); errors name the option and the name."""
    runs, manifests, sets, labels = [], [], [], {}
    for name in names:
        try:
            found = _run_or_set(name, runs_root, smoke, folder)
        except ValueError as error:
            raise BaselineError(f"--compare {name}: {str(error).splitlines()[0]}") from None
        label = found.name if isinstance(found, BaselineSet) else source_label(found)
        if label in labels.values() or (isinstance(found, BaselineSet) and label == OURS):
            raise BaselineError(f"--compare {name}: another --compare source is labelled {label!r} too; compare "
                                "one of them, or save the set under another name")
        labels[name] = label
        if isinstance(found, BaselineSet):
            sets.append(found)
        else:
            runs.append(name)
            manifests.append(found)
    return Comparisons(runs, manifests, sets, labels)

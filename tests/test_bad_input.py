"""Bad input: every case under tests/bad_input/ must end `scm-bench run` with exit code 2 and one line on stderr,
`error: ...`, that names the problem (each `# expect:` substring) and a fix, with nothing submitted and nothing
written.

A case is one file. Its leading comment lines (or, for a file that cannot carry comments, a `NAME.expect` sidecar)
hold its settings:

    # expect: SUBSTRING   one or more; each must appear in the error line (case-insensitive). `{file}`: the case's
                          file name. The others are matched with the case's own path masked out, so an expectation
                          never passes because the file happens to be called like the key.
    # args: --set a.b=1   extra command-line arguments (split like a shell would)
    # executor: NAME      --executor NAME instead of debug
    # mkdir: DIR          a folder (relative to the working directory) the case needs to exist

The command runs in-process (typer's CliRunner) in an empty working directory with submission disabled: a case the
harness accepts by mistake fails at once with "accepted", it never trains.
"""
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

ROOT = Path(__file__).resolve().parents[1]
CASES_DIR = ROOT / "tests" / "bad_input"
SETTINGS = ("expect", "args", "executor", "mkdir")
# an error must say what to do, not only what is wrong: one of these words (or phrases) names the fix
# (pydantic's "should be ..." / "should have ..." state the valid values, so they count). Not preceded by "-" or a
# word character, so "--set" in a quoted option or "data set" does not count as the advice "set ...".
FIX_WORDS = re.compile(r"\be\.g\.|(?<![-\w])(?<!data )(use|give|set|remove|expected|should be|should have|must be|"
                       r"choose|check|run|rename|leave|add|point|download|copy|quote|fix|delete|move|did you mean|"
                       r"one of)\b", re.IGNORECASE)


@dataclass
class Case:
    path: Path
    expect: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    executor: str = "debug"
    mkdir: list[str] = field(default_factory=list)


def read_case(path: Path) -> Case:
    sidecar = path.with_name(path.name + ".expect")
    source = sidecar if sidecar.is_file() else path
    case = Case(path)
    for raw in source.read_bytes().split(b"\n"):
        if not raw.startswith(b"#"):
            break
        key, sep, value = raw.decode("utf-8").lstrip("#").strip().partition(":")
        key, value = key.strip(), value.strip()
        if not sep or key not in SETTINGS:
            continue  # an ordinary comment (e.g. digits.yaml's own first line)
        if key == "expect":
            case.expect.append(value)
        elif key == "args":
            case.args += shlex.split(value)
        elif key == "executor":
            case.executor = value
        else:
            case.mkdir.append(value)
    return case


CASES = [read_case(p) for p in sorted(CASES_DIR.iterdir()) if p.is_file() and p.suffix != ".expect"]


class Submitted(BaseException):
    """Raised in place of a submission: the harness accepted the case and was about to run a job.
    A BaseException, so no `except Exception` in the harness can swallow it."""


@pytest.fixture
def no_submission(monkeypatch):
    import submitit.core.core
    from harness.run import launch, runner, submission

    def refuse(*args, **kwargs):
        what = ""
        if args and isinstance(args[0], list):  # submit_array(tasks, ...)
            what = ": " + ", ".join(f"{task.kind} of {task.job.id}" for task in args[0])
        raise Submitted(f"tried to submit{what}")

    def no_manifest(*args, **kwargs):
        raise Submitted("tried to write the run manifest")

    monkeypatch.setattr(submitit.core.core.Executor, "submit", refuse)
    monkeypatch.setattr(submission, "submit_array", refuse)  # before it writes job.json
    monkeypatch.setattr(launch, "submit_array", refuse)
    monkeypatch.setattr(runner, "write_manifest", no_manifest)


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def error_problems(exit_code: int, stdout: str, stderr: str, expect: list[str], path: Path,
                   content: bool = True) -> list[str]:
    """What is wrong with how the command ended (empty: all as required); `content`: also what the line says."""
    problems = []
    if exit_code != 2:
        problems.append(f"exit code {exit_code}, expected 2")
    if "Traceback" in stdout + stderr:
        problems.append("a traceback was printed")
    if stdout.strip():
        problems.append("stdout is not empty")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, expected exactly one")
    message = lines[0] if lines else ""
    if lines and not message.startswith("error: "):
        problems.append("the line does not start with 'error: '")
    if not content:
        return problems
    masked = message
    for own in (str(path), path.name, path.stem):
        masked = masked.replace(own, "<recipe>")
    for wanted in expect:
        text, needle = (message, path.name) if wanted == "{file}" else (masked, wanted)
        if needle.lower() not in text.lower():
            problems.append(f"the line does not name {needle!r}")
    if message and not FIX_WORDS.search(masked.removeprefix("error: ")):
        problems.append("the line names no fix (no 'use', 'give', 'set', 'e.g.', 'remove', 'expected', ...)")
    return problems


def run_in_process(tmp_path, path: Path, args=(), executor="debug", expect=(), allowed=frozenset()):
    """`scm-bench run PATH` in tmp_path; fail with everything it printed unless it ended as required and wrote
    nothing beyond `allowed` (what tmp_path held before)."""
    runs = tmp_path / "runs"
    argv = ["run", str(path), "--runs-dir", str(runs), "--executor", executor, *args]
    before = snapshot(tmp_path) | set(allowed)
    try:
        result, submitted = CliRunner().invoke(app, argv), None
    except Submitted as error:
        submitted = str(error)
    if submitted:
        pytest.fail(f"{path.name}: ACCEPTED: scm-bench {' '.join([*argv[:2], *args])} {submitted} (expected exit 2 "
                    f"naming {list(expect)})", pytrace=False)
    problems = error_problems(result.exit_code, result.stdout, result.stderr, list(expect), path)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problems.append(f"uncaught {type(result.exception).__name__}: {result.exception}")
    written = sorted(snapshot(tmp_path) - before)
    if written:
        problems.append(f"wrote {written[:5]}")
    if problems:
        pytest.fail(f"{path.name}: " + "; ".join(problems) + f"\n  exit code: {result.exit_code}\n  stderr: "
                    f"{result.stderr.strip()[:1500]!r}\n  stdout: {result.stdout.strip()[:500]!r}", pytrace=False)


# ---- the corpus ----------------------------------------------------------------------------------------------------

def test_corpus_is_complete():
    assert len(CASES) >= 34, f"only {len(CASES)} bad-input cases"
    for case in CASES:
        assert case.expect, f"{case.path.name}: no '# expect:' line (nor a {case.path.name}.expect sidecar)"


@pytest.mark.parametrize("case", CASES, ids=[c.path.name for c in CASES])
def test_bad_input_case(case, tmp_path, monkeypatch, no_submission):
    monkeypatch.chdir(tmp_path)  # relative paths in the case (data folders, refs) resolve here, and writes land here
    for folder in case.mkdir:
        (tmp_path / folder).mkdir(parents=True)
    run_in_process(tmp_path, case.path, case.args, case.executor, case.expect)
    assert not (tmp_path / "pwned-by-recipe").exists(), "a YAML tag ran a command"


# ---- cases that are not a file's content ---------------------------------------------------------------------------

def test_recipe_path_missing(tmp_path, monkeypatch, no_submission):
    monkeypatch.chdir(tmp_path)
    run_in_process(tmp_path, tmp_path / "no_such_recipe.yaml", expect=["{file}", "not found"])


def test_recipe_path_is_a_directory(tmp_path, monkeypatch, no_submission):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "a_recipe_folder"
    folder.mkdir()
    run_in_process(tmp_path, folder, expect=["{file}", "directory"])


@pytest.mark.parametrize("step", [4, 1200], ids=["resume-checkpoint", "final-checkpoint"])
def test_checkpoint_of_another_network(step, tmp_path, monkeypatch, no_submission):
    """The teacher job's folder already holds a checkpoint written for another network (a resume point, or the
    final one that sCT / sCD would start from): refused before anything is submitted, naming the file."""
    import torch
    from harness.recipe.load import load_recipe
    from harness.recipe.planner import plan_jobs

    monkeypatch.chdir(tmp_path)
    recipe = ROOT / "recipes" / "digits.yaml"
    teacher = next(job for job in plan_jobs(load_recipe(recipe), tmp_path / "runs").train if job.stage == "teacher")
    checkpoint = teacher.path / "checkpoints" / f"step-{step:08d}.pt"
    checkpoint.parent.mkdir(parents=True)
    foreign = {"foo.weight": torch.zeros(3)}
    torch.save({"step": step, "sampled": "net", "networks": {"net": foreign}, "ema": {"net": dict(foreign)}},
               checkpoint)
    placed = snapshot(tmp_path)
    run_in_process(tmp_path, recipe, expect=[checkpoint.name], allowed=placed)
    assert snapshot(tmp_path) == placed


# ---- the real process: exit status and stderr as a shell sees them -------------------------------------------------

@pytest.mark.parametrize("name", ["unknown_top_level_key.yaml", "python_tag.yaml", "name_parent_dir.yaml"])
def test_bad_input_in_a_real_process(name, tmp_path):
    case = read_case(CASES_DIR / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "harness.cli", "run", str(case.path), "--runs-dir", str(tmp_path / "runs"),
            "--executor", case.executor, *case.args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: ACCEPTED: still running after 120 s (expected exit 2 at once)", pytrace=False)
    # what the line says is checked in-process (test_bad_input_case); here: the status and streams a shell sees
    problems = error_problems(done.returncode, done.stdout, done.stderr, case.expect, case.path, content=False)
    if list(tmp_path.iterdir()):
        problems.append(f"wrote {sorted(p.name for p in tmp_path.iterdir())}")
    assert not problems, f"{name}: " + "; ".join(problems) + f"\n  stderr: {done.stderr.strip()[:1500]!r}"

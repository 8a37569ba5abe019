"""What a newcomer meets in the run layer: the run manifest lets report, status and cancel find exactly what `run`
made (with its --set), a recipe name belongs to one file, status lists pending jobs too, --smoke says what it
replaces, report exits non-zero with nothing to report, and cancel stops a local run, evaluation included, and
everything that would have come after it."""
import os
import signal
import subprocess
import sys
import time

import yaml

from harness import store
from helpers import ROOT, tiny_recipe


def cli(*args, cwd=ROOT, **kwargs):
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kwargs)


def test_report_and_status_find_a_run_made_with_set_and_the_hint_says_how(tmp_path):
    path = tiny_recipe(tmp_path)
    runs = tmp_path / "my-runs"
    done = cli("run", path, "--executor", "debug", "--set", "stages.sct.steps=4", "--set", "stages.scd.steps=4",
               "--runs-dir", runs)
    assert done.returncode == 0, done.stderr[-2000:]
    hint = done.stdout.split("next:")[1].split()
    assert hint == ["scm-bench", "report", str(path), "--runs-dir", str(runs)]  # following it works:
    shown = cli(*hint[1:], "--results-dir", tmp_path / "results")
    assert shown.returncode == 0, shown.stderr
    table = (tmp_path / "results" / "tiny" / "table.csv").read_text()
    assert table.count("\n") == 6  # header + teacher, sCT and sCD at 1 and 2 steps: the --set run's rows
    status = cli("status", path, "--runs-dir", runs)
    assert status.returncode == 0 and status.stdout.count("finished") == 3 and status.stdout.count("trained") == 3


def test_report_with_nothing_to_report_exits_non_zero(tmp_path):
    path = tiny_recipe(tmp_path)
    never = cli("report", path, "--runs-dir", tmp_path / "runs")
    assert never.returncode == 2 and "no run of tiny" in never.stderr and "scm-bench run" in never.stderr
    from harness.recipe.load import load_recipe
    from harness.recipe.manifest import write_manifest
    from harness.recipe.planner import plan_jobs

    write_manifest(tmp_path / "runs", path, plan_jobs(load_recipe(path), tmp_path / "runs"), [], False, "local")
    unfinished = cli("report", path, "--runs-dir", tmp_path / "runs", "--results-dir", tmp_path / "results")
    assert unfinished.returncode == 1 and "no finished evaluations yet" in unfinished.stderr
    assert not (tmp_path / "results").exists()


def test_a_second_launcher_of_a_followed_run_is_refused_and_writes_nothing(tmp_path):
    from harness.recipe.load import load_recipe
    from harness.recipe.manifest import manifest_path, write_manifest
    from harness.recipe.planner import plan_jobs

    path, runs = tiny_recipe(tmp_path), tmp_path / "runs"
    follower = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "scm-bench"])  # a launcher
    try:
        write_manifest(runs, path, plan_jobs(load_recipe(path), runs), [], False, "local", launcher_pid=follower.pid)
        before = manifest_path(runs, "tiny").read_text()
        second = cli("run", path, "--executor", "debug", "--runs-dir", runs)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert f"pid {follower.pid}" in second.stderr and "scm-bench cancel" in second.stderr
        assert manifest_path(runs, "tiny").read_text() == before and not (runs / "store").exists()
    finally:
        follower.kill()
        follower.wait()


def test_cancel_leaves_a_shared_job_that_another_recipes_run_submitted(tmp_path):
    from harness.recipe.load import load_recipe
    from harness.recipe.manifest import write_manifest
    from harness.recipe.planner import plan_jobs
    from harness.run.status import cancel_run

    path, runs = tiny_recipe(tmp_path), tmp_path / "runs"
    plan = plan_jobs(load_recipe(path), runs)
    manifest = write_manifest(runs, path, plan, [], False, "local")
    workers = {}
    for job, run in zip(plan.train[:2], ("other", "tiny")):  # a local submitit worker of each run
        workers[run] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])
        store.write_json(job.path / "submitted.json", {"train": {
            "executor": "local", "job_id": str(workers[run].pid), "run": run, "stdout": "", "stderr": ""}})
    try:
        stopped = cancel_run(manifest)
        assert workers["tiny"].wait(timeout=10) == -signal.SIGTERM and stopped == [plan.train[1].id]
        assert workers["other"].poll() is None  # the other recipe's run still owns its job
    finally:
        for worker in workers.values():
            worker.kill()
            worker.wait()


def test_status_lists_every_job_of_the_run_pending_ones_too_by_variant(tmp_path):
    from harness.recipe.load import load_recipe
    from harness.recipe.manifest import write_manifest
    from harness.recipe.planner import plan_jobs

    path = tiny_recipe(tmp_path, sweep={"stages.sct.p_mean": [-1.0, -0.8]})
    plan = plan_jobs(load_recipe(path), tmp_path / "runs")
    write_manifest(tmp_path / "runs", path, plan, [], False, "local")
    shown = cli("status", path, "--runs-dir", tmp_path / "runs")
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if "pending" in line]
    assert len(lines) == len(plan.train) + len(plan.evaluate) == 4 + 4  # teacher and sCD shared by both variants
    variants = [next((v for v in ("p_mean=-1.0", "p_mean=-0.8") if v in line), "") for line in lines]
    assert variants == sorted(variants, key=["", "p_mean=-1.0", "p_mean=-0.8"].index)  # grouped by variant


def test_a_copied_recipe_that_keeps_its_name_is_refused_with_the_fix(tmp_path):
    path = tiny_recipe(tmp_path)
    assert cli("run", path, "--executor", "debug", "--set", "stages.teacher.steps=2", "--set", "stages.sct.steps=2",
               "--set", "stages.scd.steps=2", "--runs-dir", tmp_path / "runs").returncode == 0
    manifest = (tmp_path / "runs" / "tiny" / "run.json").read_bytes()
    copy = tmp_path / "copy.yaml"
    copy.write_text(path.read_text())
    for command in (("run", copy, "--executor", "debug"), ("report", copy), ("status", copy)):
        done = cli(*command, "--runs-dir", tmp_path / "runs")
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (command, done.stderr)
        assert f"the recipe name 'tiny' already belongs to the runs of {path}" in lines[0]
        assert "give this recipe its own name" in lines[0]
    assert (tmp_path / "runs" / "tiny" / "run.json").read_bytes() == manifest


def test_smoke_says_which_set_values_it_replaces(tmp_path):
    from harness.recipe.load import load_recipe
    from harness.recipe.smoke import replaced_by_smoke

    path = tiny_recipe(tmp_path)
    keys = ["stages.teacher.steps", "stages.sct.tangent.warmup_steps", "evaluation.samples_per_class",
            "stages.teacher.sampling.steps", "network.channels"]
    assert replaced_by_smoke(keys, load_recipe(path).network.name) == [
        "stages.teacher.steps", "evaluation.samples_per_class", "stages.teacher.sampling.steps"]
    done = cli("run", path, "--smoke", "--executor", "debug", "--set", "stages.teacher.steps=400", "--runs-dir",
               tmp_path / "runs")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "note: --smoke sets stages.teacher.steps at toy scale" in done.stderr


def _wait_for_state(folder_glob, state: str, launcher, deadline: float):
    while True:
        found = [p for p in folder_glob() if store.read_json(p / "progress.json", {}).get("state") == state]
        if found:
            return found[0]
        assert launcher.poll() is None, launcher.stderr.read()[-3000:]
        assert time.time() < deadline, f"never reached {state}"
        time.sleep(0.3)


def test_cancel_stops_a_local_evaluation_and_everything_after_it(tmp_path):
    """The newcomer's case: `scm-bench cancel` while the teacher's local evaluation runs. The evaluation stops (it
    used to ignore SIGTERM and finish), the launcher stops (it used to go on to train and evaluate the students),
    no student job ever starts, and no process is left."""
    path = tiny_recipe(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["evaluation"]["samples_per_class"] = 3000  # 30,000 samples at 7 NFE: minutes of evaluation
    raw["stages"]["teacher"]["steps"] = 2
    path.write_text(yaml.safe_dump(raw))
    runs = tmp_path / "runs"
    launcher = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(path), "--runs-dir", str(runs)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 180
    _wait_for_state(lambda: list((runs / "store").glob("diffusion-*/evaluations/*")), "evaluating", launcher, deadline)
    started = time.time()
    cancelled = cli("cancel", path, "--runs-dir", runs)
    assert cancelled.returncode == 0 and f"launcher (pid {launcher.pid})" in cancelled.stdout
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 130 and "interrupted by SIGTERM" in err
    assert time.time() - started < 45  # the evaluation stopped; it did not run to its end
    assert sorted(p.name.split("-")[0] for p in (runs / "store").iterdir() if p.name != "_reference") == ["diffusion"]
    assert not list((runs / "store").glob("*/evaluations/*/metrics.json"))  # the evaluation never finished
    left = subprocess.run(["pgrep", "-f", str(runs)], capture_output=True, text=True).stdout
    assert left.strip() == "", f"processes left: {left}"


def test_sigterm_and_sigint_to_the_launcher_only_record_the_request(tmp_path):
    """The launcher's handler raises nothing where it lands: the run's wait loop acts on the request."""
    from harness.run.stopping import StopRequests

    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stop.requested == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # a second signal changes nothing
        time.sleep(0.01)
        assert stop.requested == "SIGTERM"

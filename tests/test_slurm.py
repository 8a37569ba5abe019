"""Real Slurm through submitit (no mocks): run `scripts/slurm-local.sh start` and export SLURM_CONF first.

Skipped when no cluster answers, unless SCM_BENCH_REQUIRE_SLURM=1, which turns a missing cluster into a failure.
"""
import operator
from pathlib import Path
import os
import shutil
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.slurm


def _reachable() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    return done.returncode == 0 and any(s in done.stdout for s in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="module")
def executor_factory(tmp_path_factory):
    if not _reachable():
        if os.environ.get("SCM_BENCH_REQUIRE_SLURM") == "1":
            pytest.fail("SCM_BENCH_REQUIRE_SLURM=1 but no Slurm cluster answers sinfo; "
                        "run scripts/slurm-local.sh start and export SLURM_CONF")
        pytest.skip("no Slurm cluster reachable (scripts/slurm-local.sh start)")
    import submitit

    def make(name: str):
        executor = submitit.AutoExecutor(folder=tmp_path_factory.mktemp(name), cluster="slurm")
        executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1, mem_gb=1)
        return executor
    return make


def _sacct_state(job) -> str:
    import time

    for _ in range(40):  # accounting lags the job's end by a moment
        job.watcher.update()
        if job.state not in ("UNKNOWN", "PENDING", "RUNNING"):
            return job.state
        time.sleep(0.25)
    return job.state


def test_a_job_runs_and_accounting_sees_it_complete(executor_factory):
    job = executor_factory("single").submit(operator.add, 2, 3)  # importable in the job (this test module is not)
    assert job.result() == 5
    assert _sacct_state(job) == "COMPLETED"


def test_an_array_runs_every_task(executor_factory):
    jobs = executor_factory("array").map_array(operator.add, [1, 2, 3], [10, 20, 30])
    assert [job.result() for job in jobs] == [11, 22, 33]


def test_afterok_dependency_waits_for_the_first_job(executor_factory, tmp_path):
    import time

    marker = tmp_path / "first-done"

    def first():
        time.sleep(2)
        marker.write_text("x")

    def second():
        return marker.exists()

    ex = executor_factory("dependency")
    job1 = ex.submit(first)
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{job1.job_id}"})
    job2 = ex.submit(second)
    assert job2.result() is True and job1.done()


def test_a_failing_job_reports_its_exception(executor_factory):
    import submitit

    def boom():
        raise ValueError("bad recipe value")

    job = executor_factory("failing").submit(boom)
    with pytest.raises(submitit.core.utils.FailedJobError, match="bad recipe value"):
        job.result()


class Quiet:
    def update(self, name, info):
        pass


SLURM = {"partition": "debug", "cpus_per_task": 1, "time_min": 10}


def test_the_digits_pipeline_runs_as_slurm_jobs(executor_factory, tmp_path):
    """`executor: slurm`: teacher, then sCT and sCD as real Slurm jobs, then the same rows a rerun reads back."""
    from helpers import tiny_recipe

    from harness.recipe.load import load_recipe
    from harness.run.runner import run_recipe

    path = tiny_recipe(tmp_path, executor="slurm", resources=SLURM)
    rows = run_recipe(load_recipe(path), path, tmp_path / "runs", "slurm", Quiet())
    assert sorted((r["stage"], r["nfe"]) for r in rows if r["metric"] == "fid") == [
        ("scd", 1), ("scd", 2), ("sct", 1), ("sct", 2), ("teacher", 7)]
    logs = list((tmp_path / "runs" / "tiny" / "logs").glob("*_log.out"))
    assert len(logs) == 6  # a Slurm job per stage for training and one for evaluation, logs in the run's folder
    assert run_recipe(load_recipe(path), path, tmp_path / "runs", "slurm", Quiet()) == rows


def test_a_sweep_goes_out_as_arrays_chained_by_afterok(executor_factory, tmp_path):
    """A seed sweep: the two teachers are one array, the four students another that waits (afterok) for the
    teachers' tasks; generation for each evaluation is split over 2 array tasks, and each evaluation waits for its
    training and its generation tasks; every variant's rows come back."""
    from helpers import tiny_recipe

    from harness.recipe.load import load_recipe
    from harness.recipe.manifest import read_manifest
    from harness.run.runner import run_recipe
    from harness.run.submission import submitted

    path = tiny_recipe(tmp_path, executor="slurm", sweep={"seed": [0, 1]}, resources=SLURM)
    raw = yaml.safe_load(path.read_text())
    raw["evaluation"].update(array_tasks=2, shard_size=20)
    path.write_text(yaml.safe_dump(raw))
    rows = run_recipe(load_recipe(path), path, tmp_path / "runs", "slurm", Quiet())
    assert sorted({r["variant"] for r in rows}) == ["seed=0", "seed=1"]
    assert len([r for r in rows if r["metric"] == "fid"]) == 10
    plan = read_manifest(tmp_path / "runs", "tiny").plan
    train = {job.id: (job, submitted(job.path)["train"]) for job in plan.train}
    assert len(train) == 6 and all("_" in record["job_id"] for _, record in train.values())
    array_of = {job_id: record["job_id"].split("_")[0] for job_id, (_, record) in train.items()}
    teachers = {array_of[job.id] for job, _ in train.values() if job.stage == "teacher"}
    students = {array_of[job.id] for job, _ in train.values() if job.stage != "teacher"}
    assert len(teachers) == 1 and len(students) == 1  # one array per level of the job graph
    scripts = {p.name: p.read_text() for p in (tmp_path / "runs" / "tiny" / "logs").glob("*_submission.sh")}
    student_script = next(text for name, text in scripts.items() if name.startswith(next(iter(students))))
    teacher_tasks = sorted(record["job_id"] for job, record in train.values() if job.stage == "teacher")
    assert f"--dependency=afterok:{':'.join(teacher_tasks)}" in student_script
    generation_arrays = set()
    for job in plan.evaluate:  # generation: 2 tasks of one array per level, each after the job's training
        records = submitted(job.path)
        assert {"generate-0", "generate-1", "evaluate"} <= set(records)
        trained = train[job.train.id][1]["job_id"]
        generate_script = next(text for n, text in scripts.items()
                               if n.startswith(records["generate-0"]["job_id"].split("_")[0]))
        assert trained in generate_script
        evaluate_script = next(text for n, text in scripts.items()
                               if n.startswith(records["evaluate"]["job_id"].split("_")[0]))
        assert trained in evaluate_script
        assert all(records[k]["job_id"] in evaluate_script for k in ("generate-0", "generate-1"))
        generation_arrays.add(records["generate-0"]["job_id"].split("_")[0])
    assert len(generation_arrays) == 2  # teachers' and students' generation arrays
    sct = next(job for job in plan.evaluate if job.train.stage == "sct")
    assert len(list((sct.path / "samples" / "consistency-1").glob("features-*.npy"))) == 4  # 80 samples in 20s


def _teacher(tmp_path, *overrides, **recipe_changes):
    from helpers import stage_job, tiny_recipe

    path = tiny_recipe(tmp_path / "recipe", **recipe_changes)
    return stage_job(path, tmp_path / "runs", "teacher", list(overrides)), path


def test_a_two_task_job_trains_with_gloo_ddp_on_slurm(executor_factory, tmp_path):
    """resources.tasks_per_node: 2 -> sbatch --ntasks-per-node=2; submitit's distributed environment joins the two
    tasks in one gloo group; rank 0 writes the checkpoint, which matches a one-process run (float sums aside)."""
    import torch

    from harness import store
    from harness.run.entry import Task
    from harness.run.submission import submit_one
    from harness.run.train import train_stage

    settings = ("stages.teacher.steps=3", "stages.teacher.batch_size=16", "stages.teacher.label_dropout=0.0")
    ddp, _ = _teacher(tmp_path / "ddp", *settings, resources={**SLURM, "tasks_per_node": 2})
    single, _ = _teacher(tmp_path / "single", *settings, resources=SLURM)
    handle = submit_one(Task("train", ddp, threads=1), "slurm", ddp.resources)
    final = handle.results()
    assert len(final) == 2 and final[0] == final[1]  # both tasks ran and ended on the same checkpoint
    assert store.read_json(ddp.path / "progress.json")["ranks"] == 2
    trained = torch.load(final[0], weights_only=True)
    reference = torch.load(train_stage(single, threads=1), weights_only=True)
    for name, tensor in reference["networks"]["net"].items():
        torch.testing.assert_close(trained["networks"]["net"][name], tensor, rtol=1e-3, atol=1e-5, msg=name)


def test_a_preempted_job_is_requeued_and_ends_as_if_uninterrupted(executor_factory, tmp_path):
    """SIGUSR2 mid-training (what Slurm sends before preemption or the time limit): submitit checkpoints the call
    and requeues the job, which resumes from its newest checkpoint; its final weights equal an uninterrupted run's."""
    import time

    import torch

    from harness import store
    from harness.run.entry import Task
    from harness.run.submission import submit_one
    from harness.run.train import train_stage

    settings = ("stages.teacher.steps=400", "stages.teacher.batch_size=16", "stages.teacher.checkpoint_every=40")
    job, _ = _teacher(tmp_path / "slurm", *settings, resources=SLURM)
    reference, _ = _teacher(tmp_path / "reference", *settings, resources=SLURM)
    handle = submit_one(Task("train", job, threads=1), "slurm", job.resources)
    deadline = time.time() + 120
    while store.read_json(job.path / "progress.json", {}).get("step", 0) < 100:  # past two checkpoints
        assert time.time() < deadline and not handle.done(), "the job never got going"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR2", handle.job_id], check=True)
    final = handle.result()  # a training job returns its final checkpoint
    assert final.endswith("step-00000400.pt")
    log = Path(handle.paths.stderr).read_text() + Path(handle.paths.stdout).read_text()
    assert "requeue" in log.lower(), log[-2000:]  # submitit logs the checkpoint-and-requeue

    interrupted = torch.load(train_stage(job, threads=1), weights_only=True)  # already finished: just the path
    uninterrupted = torch.load(train_stage(reference, threads=1), weights_only=True)
    assert interrupted["step"] == uninterrupted["step"] == 400
    for key in ("networks", "ema"):
        for name, tensor in uninterrupted[key]["net"].items():
            assert torch.equal(interrupted[key]["net"][name], tensor), f"{key}.{name} differs"


def test_status_shows_a_running_job_and_cancel_stops_it(executor_factory, tmp_path):
    """A run's manifest lists its jobs: status shows the running one with its Slurm id (and the others as pending);
    cancel scancels it."""
    import sys
    import time

    from helpers import ROOT

    from harness import store
    from harness.recipe.load import load_recipe
    from harness.recipe.manifest import write_manifest
    from harness.recipe.planner import plan_jobs
    from harness.run.entry import Task
    from harness.run.submission import submit_one

    job, path = _teacher(tmp_path, "stages.teacher.steps=100000", "stages.teacher.batch_size=16", resources=SLURM)
    plan = plan_jobs(load_recipe(path, ["stages.teacher.steps=100000", "stages.teacher.batch_size=16"]),
                     tmp_path / "runs")
    write_manifest(tmp_path / "runs", path, plan, [], False, "slurm")
    handle = submit_one(Task("train", job, threads=1), "slurm", job.resources)
    deadline = time.time() + 60
    while store.read_json(job.path / "progress.json", {}).get("step", 0) < 5:
        assert time.time() < deadline
        time.sleep(0.2)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "harness.cli", *args, str(path), "--runs-dir",
                               str(tmp_path / "runs")], capture_output=True, text=True, cwd=ROOT)

    shown = cli("status")
    assert shown.returncode == 0 and "running" in shown.stdout and handle.job_id in shown.stdout
    assert "pending" in shown.stdout  # the students and the evaluations the run has not started
    cancelled = cli("cancel")
    assert "cancelled 1:" in cancelled.stdout and job.id in cancelled.stdout
    deadline = time.time() + 30
    while _sacct_state(handle) not in ("CANCELLED", "FAILED") and time.time() < deadline:
        time.sleep(0.5)
    assert handle.state.startswith("CANCELLED")


def test_a_rerun_follows_queued_jobs_instead_of_submitting_them_again(executor_factory, tmp_path):
    """`run --no-wait`, then `run` again at once: the second run finds every job still queued or running in
    Slurm, follows those (no second submission, which would fight the first over the job's folder) and returns
    the rows of the whole pipeline."""
    from helpers import tiny_recipe

    from harness.recipe.load import load_recipe
    from harness.run.runner import run_recipe

    path = tiny_recipe(tmp_path, executor="slurm", resources=SLURM)
    assert run_recipe(load_recipe(path), path, tmp_path / "runs", "slurm", Quiet(), wait=False) == []
    logs = tmp_path / "runs" / "tiny" / "logs"
    first = sorted(p.name for p in logs.glob("*_submission.sh"))
    assert len(first) == 4  # one per level and kind: teacher training and evaluation, students' training, theirs
    rows = run_recipe(load_recipe(path), path, tmp_path / "runs", "slurm", Quiet())
    assert sorted(p.name for p in logs.glob("*_submission.sh")) == first  # nothing submitted twice
    assert len([r for r in rows if r["metric"] == "fid"]) == 5

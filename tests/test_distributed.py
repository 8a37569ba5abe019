"""A global batch split over data-parallel ranks (gloo on the CPU) and over accumulation passes gives the gradient
of the whole batch in one pass: the same draws, only the order of float sums differs."""
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from harness.compute.distributed import Ranks
from harness.recipe.load import load_recipe
from harness.recipe.planner import plan_jobs
from harness.run.train import accumulate_gradients, build_training, train_stage
from helpers import tiny_recipe

BATCH = 16


def _jobs(tmp_path: Path, tasks=1, *overrides) -> dict:
    """The tiny recipe's training jobs by stage: 2 steps at batch 16."""
    path = tiny_recipe(tmp_path, resources={"tasks_per_node": tasks, "cpus_per_task": 1})
    changes = [f"stages.{stage}.{key}" for stage in ("teacher", "sct", "scd")
               for key in ("steps=2", f"batch_size={BATCH}", "checkpoint_every=2")]
    return {job.stage: job for job in plan_jobs(load_recipe(path, [*changes, *overrides]), tmp_path / "runs").train}


def _fresh(runs: Path, stage: str, micro_batch=None, *overrides):
    """One stage's job (in passes of `micro_batch`) in a folder of its own, so it starts at step 0 whatever the
    store holds; its teacher is the trained one."""
    job = _jobs(runs, 1, f"stages.{stage}.micro_batch={micro_batch or 'null'}", *overrides)[stage]
    return job.model_copy(update={"folder": str(runs / "fresh" / f"{stage}-{micro_batch}-{len(overrides)}")})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-step teacher whose EMA starts the students (so sCD has a teacher to distil), in one store that every
    variant of these tests plans into."""
    root = tmp_path_factory.mktemp("teacher")
    for no_masks in ((), ("stages.teacher.label_dropout=0.0",)):
        train_stage(_jobs(root, 1, *no_masks)["teacher"], threads=1)
    return root


def _gradients(job, ranks: Ranks) -> dict:
    method, data, state = build_training(job)
    diag, nonfinite = accumulate_gradients(job, method, state, data, ranks, torch.autocast("cpu", enabled=False))
    assert nonfinite is None
    grads = {name: p.grad.clone() for name, p in state.nets.net.named_parameters() if p.grad is not None}
    return {"grads": grads, "diag": diag}


def _assert_same_gradients(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")


@pytest.mark.parametrize("stage", ["teacher", "sct", "scd"])
def test_accumulation_passes_give_the_one_pass_gradient(runs, stage):
    whole = _gradients(_fresh(runs, stage), Ranks())
    passes = _gradients(_fresh(runs, stage, 4), Ranks())  # 4 passes of 4
    _assert_same_gradients(whole["grads"], passes["grads"])
    assert whole["diag"]["loss"] == pytest.approx(passes["diag"]["loss"], rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, job, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_gradients(job, Ranks(rank, world, rank)), f"{out}/rank-{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("stage", ["teacher", "scd"])
def test_two_gloo_ranks_give_the_one_process_gradient(runs, tmp_path, stage):
    """Each rank takes half of the global batch (in 2 passes of 4 here); after the all-reduce every rank holds the
    whole batch's gradient."""
    no_masks = "stages.teacher.label_dropout=0.0"  # masks are drawn per rank (see accumulate_gradients)
    whole, job = _fresh(runs, stage, None, no_masks), _fresh(runs, stage, 4, no_masks)
    mp.start_processes(_rank_main, args=(2, _free_port(), job, str(tmp_path)), nprocs=2, start_method="spawn")
    single = _gradients(whole, Ranks())
    ranks = [torch.load(tmp_path / f"rank-{r}.pt", weights_only=True) for r in range(2)]
    for result in ranks:
        _assert_same_gradients(single["grads"], result["grads"])
        assert result["diag"]["loss"] == pytest.approx(single["diag"]["loss"], rel=1e-5)
    for name, grad in ranks[0]["grads"].items():  # all-reduce leaves identical gradients on every rank
        assert torch.equal(grad, ranks[1]["grads"][name])


def test_a_recipe_with_two_tasks_per_job_runs_end_to_end(tmp_path):
    """run_recipe collects a multi-task job's result (one per task) and goes on to the next stages."""
    from harness.run.runner import run_recipe

    class Quiet:
        def update(self, name, info):
            pass

    path = tiny_recipe(tmp_path, resources={"tasks_per_node": 2, "cpus_per_task": 1})
    rows = run_recipe(load_recipe(path), path, tmp_path / "runs", "local", Quiet())
    assert sorted((r["stage"], r["nfe"]) for r in rows if r["metric"] == "fid") == [
        ("scd", 1), ("scd", 2), ("sct", 1), ("sct", 2), ("teacher", 7)]


def test_a_two_task_job_trains_with_ddp_through_submitit(tmp_path):
    """tasks_per_node: 2 on the local executor: two processes, one gloo group, rank 0 writes the checkpoint; the
    weights match a one-process run of the same recipe (up to float summation order through 2 Adam steps; the
    teacher's label dropout is off, since each rank draws its own masks)."""
    import submitit

    from harness import store
    from harness.recipe.sections import ResourcesConfig
    from harness.run.entry import JobEntry, Task

    two = _jobs(tmp_path / "two", 2, "stages.teacher.label_dropout=0.0")["teacher"]
    one = _jobs(tmp_path / "one", 1, "stages.teacher.label_dropout=0.0")["teacher"]
    executor = submitit.LocalExecutor(folder=str(tmp_path / "logs"))
    executor.update_parameters(timeout_min=10, tasks_per_node=ResourcesConfig(tasks_per_node=2).tasks)
    handle = executor.submit(JobEntry(), Task("train", two))
    final = handle.results()  # one result per task
    assert len(final) == 2 and final[0] == final[1]
    progress = store.read_json(two.path / "progress.json")
    assert progress["ranks"] == 2 and progress["step"] == 2
    ddp = torch.load(final[0], weights_only=True)
    reference = torch.load(train_stage(one, threads=1), weights_only=True)
    for name, tensor in reference["networks"]["net"].items():
        torch.testing.assert_close(ddp["networks"]["net"][name], tensor, rtol=1e-3, atol=1e-5, msg=name)

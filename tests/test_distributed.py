"""A global batch split over data-parallel ranks (gloo on the CPU) and over accumulation passes gives the gradient
of the whole batch in one pass: the same draws, only the order of float sums differs."""
import copy
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from harness.distributed import Ranks
from harness.launch import plan_jobs
from harness.recipe import load_recipe
from harness.train import _accumulate_gradients, build_training, train_stage
from test_harness import tiny_recipe

BATCH = 16


def _jobs(tmp_path: Path, micro_batch=None, tasks=1) -> dict:
    recipe = load_recipe(tiny_recipe(tmp_path, resources={"tasks_per_node": tasks, "cpus_per_task": 1}))
    jobs = plan_jobs(recipe, tmp_path / "runs")
    for job in jobs.values():
        job["threads"] = 1
        for stage in job["recipe"]["stages"].values():
            stage.update(steps=2, batch_size=BATCH, micro_batch=micro_batch, checkpoint_every=2)
        if "init" in job:
            job["init"] = str(Path(jobs["teacher"]["run_dir"]) / "checkpoints" / "step-00000002.pt")
    return jobs


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    """A 2-step teacher whose EMA starts the students (so sCD has a teacher to distil)."""
    jobs = _jobs(tmp_path_factory.mktemp("teacher"))
    train_stage(jobs["teacher"])
    return jobs


def _gradients(job: dict, ranks: Ranks) -> dict:
    method, stage, data, state, teacher, tangent = build_training(job)
    recipe = load_recipe_from(job)
    diag, nonfinite = _accumulate_gradients(method, stage, recipe, state, data, teacher, tangent, ranks,
                                            torch.autocast("cpu", enabled=False))
    assert nonfinite is None
    grads = {name: p.grad.clone() for name, p in state.net.named_parameters() if p.grad is not None}
    return {"grads": grads, "diag": diag}


def load_recipe_from(job: dict):
    from harness.recipe import Recipe

    return Recipe.model_validate(job["recipe"])


def _with_micro_batch(job: dict, micro_batch) -> dict:
    job = copy.deepcopy(job)
    job["recipe"]["stages"][job["method"]]["micro_batch"] = micro_batch
    return job


def _assert_same_gradients(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")


@pytest.mark.parametrize("method", ["teacher", "sct", "scd"])
def test_accumulation_passes_give_the_one_pass_gradient(trained_teacher, method):
    whole = _gradients(trained_teacher[method], Ranks())
    passes = _gradients(_with_micro_batch(trained_teacher[method], 4), Ranks())  # 4 passes of 4
    _assert_same_gradients(whole["grads"], passes["grads"])
    assert whole["diag"]["loss"] == pytest.approx(passes["diag"]["loss"], rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, job: dict, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_gradients(job, Ranks(rank, world, rank)), f"{out}/rank-{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("method", ["teacher", "scd"])
def test_two_gloo_ranks_give_the_one_process_gradient(trained_teacher, tmp_path, method):
    """Each rank takes half of the global batch (in 2 passes of 4 here); after the all-reduce every rank holds the
    whole batch's gradient."""
    whole = copy.deepcopy(trained_teacher[method])
    whole["recipe"]["stages"][method]["label_dropout"] = 0.0  # masks are drawn per rank (see _accumulate_gradients)
    job = _with_micro_batch(whole, 4)
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
    from harness.launch import run_recipe

    class Quiet:
        def update(self, name, info):
            pass

    path = tiny_recipe(tmp_path, resources={"tasks_per_node": 2, "cpus_per_task": 1})
    recipe = load_recipe(path)
    rows = run_recipe(recipe, tmp_path / "runs", "local", Quiet())
    assert sorted((r["method"], r["nfe"]) for r in rows if r["metric"] == "fid") == [("scd", 1), ("scd", 2), ("sct", 1), ("sct", 2),
                                                            ("teacher", 7)]


def test_a_two_task_job_trains_with_ddp_through_submitit(tmp_path):
    """tasks_per_node: 2 on the local executor: two processes, one gloo group, rank 0 writes the checkpoint; the
    weights match a one-process run of the same recipe (up to float summation order through 2 Adam steps; the
    teacher's label dropout is off, since each rank draws its own masks)."""
    import submitit

    from harness import store
    from harness.launch import StageJob
    from harness.recipe import ResourcesConfig

    two = _jobs(tmp_path / "two", tasks=2)["teacher"]
    one = _jobs(tmp_path / "one")["teacher"]
    for job in (two, one):
        job["recipe"]["stages"]["teacher"]["label_dropout"] = 0.0
    executor = submitit.LocalExecutor(folder=str(tmp_path / "logs"))
    executor.update_parameters(timeout_min=10, tasks_per_node=ResourcesConfig(tasks_per_node=2).tasks)
    handle = executor.submit(StageJob(), {**two, "kind": "train"})
    final = handle.results()  # one result per task
    assert len(final) == 2 and final[0] == final[1]
    progress = store.read_json(Path(two["run_dir"]) / "progress.json")
    assert progress["ranks"] == 2 and progress["step"] == 2
    ddp = torch.load(final[0], weights_only=True)
    reference = torch.load(train_stage(one), weights_only=True)
    for name, tensor in reference["net"].items():
        torch.testing.assert_close(ddp["net"][name], tensor, rtol=1e-3, atol=1e-5, msg=name)

"""Data parallelism inside one job: one task per GPU (or per CPU process), gradients summed over the tasks.

submitit starts the job's tasks (Slurm's --ntasks-per-node, or local processes) and tells each its rank;
`TorchDistributedEnvironment` turns that into the variables torch.distributed reads. nccl on GPUs, gloo on CPUs.
"""
import os
from dataclasses import dataclass

import submitit
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def job_task() -> tuple[int, int]:
    """(global rank, number of tasks) of this process in its submitit job; (0, 1) outside one (tests, plain calls)."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return 0, 1
    return env.global_rank, env.num_tasks


def init_ranks() -> Ranks:
    """This task's place in the job; joins the process group when the job has several tasks."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if job_task()[1] == 1:
        return Ranks()
    env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(env.rank, env.world_size, env.local_rank)


def sum_gradients(parameters, ranks: Ranks) -> None:
    """Every rank ends with the sum of all ranks' gradients (each already scaled by its share of the batch)."""
    if ranks.world_size == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """Whether `flag` holds on any rank (every rank gets the same answer)."""
    if ranks.world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(values: dict, ranks: Ranks) -> dict:
    """The mean of scalar diagnostics over ranks (for the log; the gradient itself is summed exactly)."""
    if ranks.world_size == 1 or not values:
        return values
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        stacked = stacked.cuda()
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return {k: float(v) / ranks.world_size for k, v in zip(keys, stacked.tolist())}


def finish(ranks: Ranks) -> None:
    """Wait for every rank, then leave the process group (so the job's processes exit cleanly)."""
    if ranks.world_size == 1:
        return
    dist.barrier()
    dist.destroy_process_group()

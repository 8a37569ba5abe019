"""The compute layer: where and with what a job computes: its device, its data-parallel ranks, and its networks
built from the recipe's settings and loaded with a finished job's weights. Shared by the training and evaluation
workers and the tools."""
from .distributed import Ranks, any_rank, finish, init_ranks, job_task, mean_over_ranks, sum_gradients
from .machine import machine
from .networks import (build, checkpoint_mismatch, device, load_start, read_network, sampled_ema,
                       training_network)

__all__ = ["Ranks", "any_rank", "finish", "init_ranks", "job_task", "mean_over_ranks", "sum_gradients", "build",
           "checkpoint_mismatch", "device", "load_start", "machine", "read_network", "sampled_ema", "training_network"]

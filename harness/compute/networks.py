"""A job's networks: built from the recipe's network settings for its data, with the stage's dropout while
training; loaded with the EMA weights of a finished job (what is sampled, and what students start from and read).

A checkpoint holds, per trained network role, its weights and EMA (`networks`, `ema`) and names the role that is
sampled (`sampled`); only that role's EMA is ever read outside the training job.
"""
import math
import os
from pathlib import Path

import torch
from torch import nn

from scm.nets import build_network

from .. import store
from ..recipe.jobs import Checkpoint, TrainJob


def device() -> torch.device:
    """Train and sample on the GPU when there is one (one per data-parallel task); everything also runs on CPUs."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def build(network, data_shape, num_classes: int, stage=None, takes_guidance: bool = False,
          takes_interval: bool = False) -> nn.Module:
    """The network of a recipe's `network:` section for this data; `stage` gives its dropout settings (training:
    its rate, and the largest resolution it applies at), None builds it without dropout (evaluation, a teacher);
    `takes_guidance` adds the guidance-scale input, `takes_interval` the second time r (MeanFlow's u(z, r, t))."""
    settings = dict(num_classes=num_classes, label_dropout=stage.label_dropout if stage else 0.0,
                    time_embedding=network.time_embedding, fourier_scale=network.fourier_scale,
                    c_noise=network.c_noise, guidance_input=takes_guidance, interval_input=takes_interval)
    if network.name == "mlp":
        settings.update(dim=math.prod(data_shape), hidden=network.channels or 128, depth=network.blocks_per_level or 4)
    else:
        settings.update(resolution=data_shape[-1], dropout=stage.dropout if stage else 0.0,
                        channel_mult=network.channel_mult, attn_resolutions=network.attn_resolutions)
        if network.name == "toy-unet":
            settings.update(in_channels=data_shape[0], channels=network.channels,
                            blocks_per_level=network.blocks_per_level)
        else:  # unet-edm2, ddpmpp: `channels` is the image's channel count there, the width is model_channels
            settings.update(channels=data_shape[0], model_channels=network.channels,
                            num_blocks=network.blocks_per_level,
                            dropout_max_resolution=stage.dropout_max_resolution if stage else None)
            settings.update(modulation=network.modulation)
        if network.name == "unet-edm2":
            settings.update(size=network.size or "S")
    # unset recipe fields (None) leave the network's own default
    settings = {key: tuple(v) if isinstance(v, list) else v for key, v in settings.items() if v is not None}
    return build_network(network.name, **settings)


def training_network(job: TrainJob, data_shape, num_classes: int) -> nn.Module:
    """A network the job trains, as its stage sets it up (dropout on, guidance and second time inputs where its
    method takes them)."""
    method = job.method()
    return build(job.network, data_shape, num_classes, job.spec, method.takes_guidance(), method.takes_interval())


def sampled_ema(state: dict) -> dict:
    """The EMA weights of the network a checkpoint's job samples."""
    return state["ema"][state["sampled"]]


def read_network(source: TrainJob | Checkpoint, reader: TrainJob, data_shape, num_classes: int,
                 state: dict | None = None, checkpoint: Path | None = None, weights: dict | None = None) -> nn.Module:
    """A finished job's sampled network with its EMA weights (from `state`, `checkpoint` or its final checkpoint;
    `weights`: these instead, e.g. an EMA of another length), in eval mode on `device()`. A checkpoint file is built
    with the reader's network settings."""
    if isinstance(source, Checkpoint):
        net = build(reader.network, data_shape, num_classes)
    else:
        method = source.method()
        net = build(source.network, data_shape, num_classes, takes_guidance=method.takes_guidance(),
                    takes_interval=method.takes_interval())
    if weights is None:
        weights = sampled_ema(state or store.load_checkpoint(checkpoint or source.final_checkpoint))
    net.load_state_dict(weights)
    return net.to(device()).eval().requires_grad_(False)


def load_start(net: nn.Module, source: TrainJob | Checkpoint) -> None:
    """A student starts as the network it is initialised from (its EMA weights); a guidance or second-time input
    the source lacks is new and keeps its fresh initialisation (the interval's starts at zero: the source itself)."""
    missing, unexpected = net.load_state_dict(sampled_ema(store.load_checkpoint(source.final_checkpoint)),
                                              strict=False)
    foreign = [key for key in missing if "guidance" not in key and "interval" not in key] + list(unexpected)
    if foreign:
        raise RuntimeError(f"the weights of {source.id} do not fit this stage's network ({foreign[0]} ...); a stage "
                           "must share the network settings of the stage it starts from")


def checkpoint_mismatch(job: TrainJob, data_shape, num_classes: int) -> str | None:
    """Why the newest checkpoint in the job's folder cannot be resumed by its network (another network's weights:
    other keys or shapes), or None. Checked before submitting, so a job never dies on it later."""
    saved = store.checkpoints(job.path)
    if not saved:
        return None
    path = saved[-1]
    try:
        state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable checkpoints are skipped (with a warning) when training resumes
        return None
    weights = state.get("networks", {}).get(state.get("sampled")) if isinstance(state, dict) else None
    if weights is None:
        return (f"checkpoint {path} was not written by this training code (it has no networks of a stage); move "
                "it (or its run folder) away, or use another --runs-dir")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in training_network(job, data_shape, num_classes).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.items()} if isinstance(weights, dict) else {}
    if found == expected:
        return None
    extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
    shapes = [k for k in sorted(set(found) & set(expected)) if found[k] != expected[k]]
    detail = (f"it has {extra[0]}, which the recipe's network lacks" if extra else
              f"it lacks {missing[0]}" if missing else f"{shapes[0]} is {list(found[shapes[0]])}, the recipe's "
              f"network has {list(expected[shapes[0]])}")
    return (f"checkpoint {path} was written for another network ({detail}); move it (or its run folder) away, or "
            "use another --runs-dir")

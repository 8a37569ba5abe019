"""The training job of one stage (teacher diffusion, sCT or sCD): resumable, checkpointed, reporting progress.

It runs in a submitit worker; the launcher reads progress.json to draw the progress bar.
"""
import math
import os
import time
from pathlib import Path

from . import store
from .recipe import Recipe

PROGRESS_EVERY_S = 1.0


def build_model(recipe: Recipe, data_shape, num_classes: int, stage=None, method: str = "teacher"):
    """The recipe's network for this data, with the stage's dropout settings. Only the sCD student takes the
    guidance scale as an input (network.guidance_input): the teacher and sCT never see one."""
    from scm.nets import build_network

    net = recipe.network
    settings = dict(num_classes=num_classes, label_dropout=stage.label_dropout if stage else 0.0,
                    time_embedding=net.time_embedding, fourier_scale=net.fourier_scale, c_noise=net.c_noise,
                    guidance_input=net.guidance_input and method == "scd")
    if net.name == "mlp":
        settings.update(dim=math.prod(data_shape), hidden=net.channels or 128, depth=net.blocks_per_level or 4)
    else:
        settings.update(resolution=data_shape[-1], dropout=stage.dropout if stage else 0.0,
                        channel_mult=net.channel_mult, attn_resolutions=net.attn_resolutions)
        if net.name == "toy-unet":
            settings.update(in_channels=data_shape[0], channels=net.channels, blocks_per_level=net.blocks_per_level)
        else:  # unet-edm2, ddpmpp: `channels` is the image's channel count there, the width is model_channels
            settings.update(channels=data_shape[0], model_channels=net.channels, num_blocks=net.blocks_per_level,
                            dropout_max_resolution=net.dropout_max_resolution)
        if net.name == "unet-edm2":
            settings.update(size=net.size or "S", modulation=net.modulation)
    # unset recipe fields (None) leave the network's own default
    settings = {key: tuple(v) if isinstance(v, list) else v for key, v in settings.items() if v is not None}
    return build_network(net.name, **settings)


def device():
    """Train and sample on the GPU when there is one; everything also runs on the CPU."""
    import torch

    if torch.cuda.is_available():  # one GPU per data-parallel task
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def load_ema_network(recipe: Recipe, checkpoint: Path, data_shape, num_classes: int, state: dict | None = None,
                     method: str = "teacher"):
    """The EMA weights of a finished stage, in eval mode, on `device()`."""
    net = build_model(recipe, data_shape, num_classes, method=method)
    net.load_state_dict((state or store.load_checkpoint(checkpoint))["ema"])
    return net.to(device()).eval().requires_grad_(False)


def learning_rate(opt_config, step: int) -> float:
    """EDM2: lr_ref / sqrt(max(step / t_ref, 1)) with a linear ramp-up; or constant."""
    lr = opt_config.lr
    if opt_config.schedule == "inverse-sqrt":
        lr /= max(step / opt_config.ref_steps, 1.0) ** 0.5
    if opt_config.rampup_steps > 0:
        lr *= min(step / opt_config.rampup_steps, 1.0)
    return lr


def net_device(net):
    return next(net.parameters()).device


def _optimizer(params, config):
    import torch

    cls = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}[config.name]
    return cls(params, lr=config.lr, betas=tuple(config.betas), eps=config.eps)


def _ema(net, config, batch_size):
    from scm.ema import HalfLifeEMA, PowerEMA

    if config.kind == "power":
        return PowerEMA(net, config.sigma_rel)
    return HalfLifeEMA(net, config.halflife_images, batch_size)


class TrainState:
    """Everything the next training step depends on; a checkpoint is exactly this, so resume is exact."""

    def __init__(self, recipe: Recipe, stage, net, weight):
        import torch

        self.net, self.weight = net, weight
        self.optimizer = _optimizer(list(net.parameters()) + list(weight.parameters()), stage.optimizer)
        self.ema = _ema(net, stage.ema, stage.batch_size)
        self.data_rng = torch.Generator().manual_seed(recipe.seed + 1)
        self.noise_rng = torch.Generator(device=net_device(net)).manual_seed(recipe.seed + 2)  # t and z
        self.step, self.elapsed, self.history = 0, 0.0, []
        # fp16 needs loss scaling (its range ends at 65504); bf16 has fp32's range
        self.scaler = torch.amp.GradScaler(net_device(net).type, enabled=stage.precision == "fp16")

    def state_dict(self) -> dict:
        import torch

        return {"step": self.step, "net": self.net.state_dict(), "weight": self.weight.state_dict(),
                "optimizer": self.optimizer.state_dict(), "ema": self.ema.ema.state_dict(),
                "data_rng": self.data_rng.get_state(), "noise_rng": self.noise_rng.get_state(),
                "torch_rng": torch.get_rng_state(), "elapsed": self.elapsed, "history": self.history,
                "scaler": self.scaler.state_dict(),
                **({"cuda_rng": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {})}

    def load_state_dict(self, state: dict) -> None:
        import torch

        self.net.load_state_dict(state["net"])
        self.weight.load_state_dict(state["weight"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.ema.load_state_dict(state["ema"])
        self.data_rng.set_state(state["data_rng"])
        self.noise_rng.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.elapsed, self.history = state["step"], state["elapsed"], state["history"]
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _objective(method, stage, recipe, state: TrainState, x0, labels, noise, teacher, tangent):
    from scm import consistency_loss, diffusion_loss

    if method == "teacher":
        return diffusion_loss(state.net, state.weight, x0, labels, stage.p_mean, stage.p_std, recipe.sigma_data,
                              noise=noise)
    return consistency_loss(state.net, state.weight, x0, labels, state.step, stage.p_mean, stage.p_std, tangent,
                            teacher, stage.guidance, recipe.sigma_data, noise=noise)


def _accumulate_gradients(method, stage, recipe, state: TrainState, data, teacher, tangent, ranks, autocast) -> dict:
    """One optimizer step's gradients: the global batch (indices and noise drawn identically on every rank) is cut
    into this rank's share, then into micro-batches; each pass adds (its size / global batch) x its mean loss, and
    the ranks' sums are summed. So ranks and passes change only the order of float sums, not the step; except that
    with dropout (and label dropout) each rank draws its own masks, so several ranks match one process in
    distribution, not mask for mask."""
    import torch
    from scm import draw_noise
    from .distributed import any_rank, mean_over_ranks, sum_gradients

    B = stage.batch_size
    index = torch.randint(len(data.images), (B,), generator=state.data_rng)
    noise = draw_noise((B, *data.shape), stage.p_mean, stage.p_std, recipe.sigma_data, state.noise_rng,
                       stage.guidance if method != "teacher" else None, net_device(state.net))
    share = B // ranks.world_size
    micro = stage.micro_batch or share
    if ranks.world_size > 1:  # dropout masks come from torch's own RNG: independent per rank, the same on resume
        torch.manual_seed((recipe.seed << 40) + (state.step << 12) + ranks.rank)
    state.optimizer.zero_grad(set_to_none=True)
    totals, bad = {}, None
    for start in range(ranks.rank * share, (ranks.rank + 1) * share, micro):
        part = slice(start, start + micro)
        rows = index[part].to(data.images.device)
        labels = data.labels[rows] if data.labels is not None else None
        with autocast:
            loss, diag = _objective(method, stage, recipe, state, data.images[rows], labels, noise[part], teacher,
                                    tangent)
        if not torch.isfinite(loss):
            bad = f"{method}: non-finite loss at step {state.step + 1} ({diag})"
            break
        state.scaler.scale(loss * (micro / B)).backward()
        for key, value in diag.items():
            totals[key] = totals.get(key, 0.0) + float(value) * (micro / share)
    if any_rank(bad is not None, ranks):  # every rank stops together, none is left waiting in a collective
        raise FloatingPointError(bad or f"{method}: non-finite loss on another rank at step {state.step + 1}")
    sum_gradients(list(state.net.parameters()) + list(state.weight.parameters()), ranks)
    return mean_over_ranks(totals, ranks)


def _load_teacher_weights(net, teacher_ema: dict) -> None:
    """The student starts as the teacher; a guidance input (sCD on ImageNet 512) is new and keeps its fresh init."""
    missing, unexpected = net.load_state_dict(teacher_ema, strict=False)
    foreign = [key for key in missing if "guidance" not in key] + list(unexpected)
    if foreign:
        raise RuntimeError(f"the teacher checkpoint does not fit the student network ({foreign[0]} ...); "
                           "teacher and students must share the recipe's network settings")


def build_training(job: dict):
    """Everything a stage's training loop needs, resumed from the job's newest checkpoint:
    (method, stage, data, state, teacher or None, tangent settings)."""
    import torch
    from scm import TangentSettings
    from scm.weighting import AdaptiveWeight
    from .data import load_data

    recipe, method, run_dir = Recipe.model_validate(job["recipe"]), job["method"], Path(job["run_dir"])
    stage = recipe.stage(method)
    torch.manual_seed(recipe.seed)
    data = load_data(recipe.data).to(device())
    net = build_model(recipe, data.shape, data.num_classes, stage, method).train()
    if job.get("init"):  # sCT and sCD start from the teacher's EMA weights (Sec. 5)
        _load_teacher_weights(net, store.load_checkpoint(job["init"])["ema"])
    teacher = load_ema_network(recipe, job["init"], data.shape, data.num_classes) if method == "scd" else None
    state = TrainState(recipe, stage, net.to(device()), AdaptiveWeight().to(device()))
    saved = store.checkpoints(run_dir)
    if saved:
        state.load_state_dict(store.load_checkpoint(saved[-1]))
    return method, stage, data, state, teacher, TangentSettings(**stage.tangent.model_dump())


def train_stage(job: dict) -> str:
    """Train one stage to its last step (resuming from the newest checkpoint) and return that checkpoint.

    With several tasks in the job, each is a data-parallel rank; rank 0 alone writes checkpoints and progress."""
    import torch
    from .distributed import finish, init_ranks

    torch.set_num_threads(job["threads"])
    recipe, method, run_dir = Recipe.model_validate(job["recipe"]), job["method"], Path(job["run_dir"])
    stage = recipe.stage(method)
    final = store.checkpoint_path(run_dir, stage.steps)
    if final.is_file():
        return str(final)

    ranks = init_ranks()
    method, stage, data, state, teacher, tangent = build_training(job)
    window, last_report, start = [], time.time(), time.time() - state.elapsed
    autocast = torch.autocast(device().type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        stage.precision), enabled=stage.precision != "fp32")
    while state.step < stage.steps:
        diag = _accumulate_gradients(method, stage, recipe, state, data, teacher, tangent, ranks, autocast)
        state.step += 1
        for group in state.optimizer.param_groups:
            group["lr"] = learning_rate(stage.optimizer, state.step)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if hasattr(state.net, "normalize_weights_"):  # EDM2's forced weight normalization, outside forward
            state.net.normalize_weights_()
        state.ema.update(state.net, state.step)
        state.elapsed = time.time() - start
        if not ranks.is_main:
            continue
        window.append(diag)
        if time.time() - last_report > PROGRESS_EVERY_S or state.step == stage.steps:
            _report(run_dir, state, window, time.time() - last_report, stage.steps)
            window, last_report = [], time.time()
        if state.step % stage.checkpoint_every == 0 or state.step == stage.steps:
            store.save_checkpoint(store.checkpoint_path(run_dir, state.step), state.state_dict())
    if ranks.is_main:
        store.write_json(run_dir / "progress.json", {
            "state": "trained", "step": state.step, "total": stage.steps, "loss": state.history[-1]["loss"],
            "elapsed": state.elapsed, "it_s": stage.steps / max(state.elapsed, 1e-9), "ranks": ranks.world_size})
    finish(ranks)
    return str(final)


def _report(run_dir: Path, state: TrainState, window: list[dict], seconds: float, total: int) -> None:
    """Append the window's mean diagnostics to the history and refresh progress.json."""
    mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    state.history.append({"step": state.step, **mean})
    store.write_json(run_dir / "progress.json", {
        "state": "running", "step": state.step, "total": total, "loss": mean["loss"],
        "it_s": len(window) / max(seconds, 1e-9), "elapsed": state.elapsed})

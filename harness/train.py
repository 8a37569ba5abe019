"""The training job of one stage (teacher diffusion, sCT or sCD): resumable, checkpointed, reporting progress.

It runs in a submitit worker; the launcher reads progress.json to draw the progress bar.
"""
import math
import os
import sys
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


def checkpoint_mismatch(recipe: Recipe, job: dict, data_shape, num_classes: int) -> str | None:
    """Why the newest checkpoint in the job's folder cannot be resumed by this recipe's network (another network's
    weights: other keys or shapes), or None. Checked before submitting, so a job never dies on it later."""
    import torch

    saved = store.checkpoints(Path(job["run_dir"]))
    if not saved:
        return None
    path = saved[-1]
    try:
        weights = torch.load(path, map_location="meta", weights_only=True, mmap=True).get("net", {})
    except Exception:  # noqa: BLE001 - unreadable checkpoints are skipped (with a warning) when training resumes
        return None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(recipe, data_shape, num_classes, recipe.stage(
            job["method"]), job["method"]).state_dict().items()}
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

    def __init__(self, seed: int, stage, net, weight):
        import torch

        self.net, self.weight = net, weight
        self.optimizer = _optimizer(list(net.parameters()) + list(weight.parameters()), stage.optimizer)
        self.ema = _ema(net, stage.ema, stage.batch_size)
        self.data_rng = torch.Generator().manual_seed(seed + 1)
        self.noise_rng = torch.Generator(device=net_device(net)).manual_seed(seed + 2)  # t and z
        self.step, self.elapsed, self.history = 0, 0.0, []
        self.skipped = []  # steps passed over for a non-finite term (on_nonfinite: skip): {"step", "term"}
        # fp16 needs loss scaling (its range ends at 65504); bf16 has fp32's range
        self.scaler = torch.amp.GradScaler(net_device(net).type, enabled=stage.precision == "fp16")

    def state_dict(self) -> dict:
        import torch

        return {"step": self.step, "net": self.net.state_dict(), "weight": self.weight.state_dict(),
                "optimizer": self.optimizer.state_dict(), "ema": self.ema.ema.state_dict(),
                "data_rng": self.data_rng.get_state(), "noise_rng": self.noise_rng.get_state(),
                "torch_rng": torch.get_rng_state(), "elapsed": self.elapsed, "history": self.history,
                "skipped": self.skipped,
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
        self.skipped = state.get("skipped", [])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _objective(method, stage, recipe, state: TrainState, x0, labels, noise, teacher, tangent):
    from scm import consistency_loss, diffusion_loss

    if method == "teacher":
        return diffusion_loss(state.net, state.weight, x0, labels, stage.p_mean, stage.p_std, recipe.sigma_data,
                              noise=noise)
    if stage.discrete_steps is not None:
        from scm.discrete import discrete_consistency_loss

        return discrete_consistency_loss(state.net, state.weight, x0, labels, stage.discrete_steps, stage.p_mean,
                                         stage.p_std, recipe.sigma_data, noise=noise)
    return consistency_loss(state.net, state.weight, x0, labels, state.step, stage.p_mean, stage.p_std, tangent,
                            teacher, stage.guidance, recipe.sigma_data, noise=noise)


def _accumulate_gradients(method, stage, recipe, state: TrainState, data, teacher, tangent, ranks,
                          autocast) -> tuple[dict, str | None]:
    """One optimizer step's gradients: the global batch (indices and noise drawn identically on every rank) is cut
    into this rank's share, then into micro-batches; each pass adds (its size / global batch) x its mean loss, and
    the ranks' sums are summed. So ranks and passes change only the order of float sums, not the step; except that
    with dropout (and label dropout) each rank draws its own masks, so several ranks match one process in
    distribution, not mask for mask. Returns the mean diagnostics, and the term that went non-finite (tangent,
    loss or gradient; the same on every rank) or None."""
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
        torch.manual_seed((recipe.stage_seed(method) << 40) + (state.step << 12) + ranks.rank)
    state.optimizer.zero_grad(set_to_none=True)
    totals, bad = {}, None
    for start in range(ranks.rank * share, (ranks.rank + 1) * share, micro):
        part = slice(start, start + micro)
        rows = index[part].to(data.images.device)
        labels = data.labels[rows] if data.labels is not None else None
        with autocast:
            loss, diag = _objective(method, stage, recipe, state, data.images[rows], labels, noise[part], teacher,
                                    tangent)
        bad = nonfinite_term(loss, diag)
        if bad is not None:
            break
        state.scaler.scale(loss * (micro / B)).backward()
        for key, value in diag.items():
            totals[key] = totals.get(key, 0.0) + float(value) * (micro / share)
    if any_rank(bad is not None, ranks):  # every rank sees it, none is left waiting in a collective
        state.optimizer.zero_grad(set_to_none=True)
        return {}, bad or "loss (on another rank)"
    params = list(state.net.parameters()) + list(state.weight.parameters())
    sum_gradients(params, ranks)
    # under fp16 an overflowing gradient is the loss scaler's business (it skips the step and lowers the scale)
    if not state.scaler.is_enabled() and not all(bool(torch.isfinite(p.grad).all()) for p in params
                                                 if p.grad is not None):
        state.optimizer.zero_grad(set_to_none=True)
        return {}, "gradient"
    return mean_over_ranks(totals, ranks), None


def nonfinite_term(loss, diag: dict) -> str | None:
    """Which term went non-finite: the tangent (sCT / sCD's df/dt, before normalization), else the loss."""
    import math

    tangent = diag.get("tangent_norm")
    if tangent is not None and not math.isfinite(float(tangent)):
        return "tangent"
    if not math.isfinite(float(loss.detach())):
        return "loss"
    return None


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
    from scm.weighting import AdaptiveWeight, UniformWeight
    from .data import load_data

    recipe, method, run_dir = Recipe.model_validate(job["recipe"]), job["method"], Path(job["run_dir"])
    stage = recipe.stage(method)
    torch.manual_seed(recipe.stage_seed(method))
    data = load_data(recipe.data).to(device())
    net = build_model(recipe, data.shape, data.num_classes, stage, method).train()
    if job.get("init"):  # sCT and sCD start from the teacher's EMA weights (Sec. 5)
        _load_teacher_weights(net, store.load_checkpoint(job["init"])["ema"])
    teacher = load_ema_network(recipe, job["init"], data.shape, data.num_classes) if method == "scd" else None
    weight = AdaptiveWeight() if stage.adaptive_weighting else UniformWeight()
    state = TrainState(recipe.stage_seed(method), stage, net.to(device()), weight.to(device()))
    saved = store.newest_checkpoint(run_dir)  # damaged ones are passed over, with a warning naming them
    if saved:
        state.load_state_dict(saved[1])
    return method, stage, data, state, teacher, TangentSettings(**stage.tangent.model_dump())


def train_stage(job: dict) -> str | None:
    """Train one stage to its last step (resuming from the newest intact checkpoint) and return that checkpoint,
    or None when the stage diverged (diverged.json says at which step and which term).

    SIGTERM or SIGINT (scancel, a local cancel, Ctrl-C) ends the current step, saves a checkpoint and stops; the
    next run resumes from it exactly. With several tasks in the job, each is a data-parallel rank; rank 0 alone
    writes checkpoints and progress."""
    import torch
    from .distributed import any_rank, finish, init_ranks
    from .stopping import StopRequests

    torch.set_num_threads(job["threads"])
    recipe, method, run_dir = Recipe.model_validate(job["recipe"]), job["method"], Path(job["run_dir"])
    stage = recipe.stage(method)
    final = store.checkpoint_path(run_dir, stage.steps)
    if store.checkpoint_complete(final):
        return str(final)
    if diverged_record(run_dir):
        return None
    if job.get("teacher") and diverged_record(Path(job["run_dir"]).parent / job["teacher"]):
        _mark_diverged(run_dir, {"step": 0, "term": "teacher", "policy": stage.on_nonfinite, "skipped": 0,
                                 "message": f"its teacher {job['teacher']} diverged; nothing to start from"})
        return None
    store.remove_partial_writes(run_dir / "checkpoints")
    ranks = init_ranks()
    method, stage, data, state, teacher, tangent = build_training(job)
    window, last_report, start = [], time.time(), time.time() - state.elapsed
    autocast = torch.autocast(device().type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        stage.precision), enabled=stage.precision != "fp32")
    with StopRequests() as stop:
        while state.step < stage.steps:
            diag, term = _accumulate_gradients(method, stage, recipe, state, data, teacher, tangent, ranks, autocast)
            state.step += 1
            if term is None:
                for group in state.optimizer.param_groups:
                    group["lr"] = learning_rate(stage.optimizer, state.step)
                state.scaler.step(state.optimizer)
                state.scaler.update()
                if hasattr(state.net, "normalize_weights_"):  # EDM2's forced weight normalization, outside forward
                    state.net.normalize_weights_()
                state.ema.update(state.net, state.step)
            else:  # this step's draws are used up and nothing is updated, so resume stays exact
                state.skipped.append({"step": state.step, "term": term})
                if stage.on_nonfinite == "stop" or len(state.skipped) > stage.max_skipped_steps:
                    if ranks.is_main:
                        _mark_diverged(run_dir, _divergence(method, stage, state, term))
                    finish(ranks)
                    return None
            state.elapsed = time.time() - start
            stopping = any_rank(stop.requested is not None, ranks)
            if not ranks.is_main:
                if stopping:
                    break
                continue
            if diag:
                window.append(diag)
            if window and (time.time() - last_report > PROGRESS_EVERY_S or state.step == stage.steps):
                _report(run_dir, state, window, time.time() - last_report, stage.steps)
                window, last_report = [], time.time()
            if state.step % stage.checkpoint_every == 0 or state.step == stage.steps or stopping:
                store.save_checkpoint(store.checkpoint_path(run_dir, state.step), state.state_dict())
            if stopping:
                break
    if stop.requested and state.step < stage.steps:
        if ranks.is_main:
            store.write_json(run_dir / "progress.json", {**store.read_json(run_dir / "progress.json", {}),
                                                         "state": "stopped", "step": state.step})
        finish(ranks)
        raise InterruptedError(f"{run_dir.name}: stopped by {stop.requested} at step {state.step}; the checkpoint "
                               "is saved and the next run resumes from it")
    if ranks.is_main:
        store.write_json(run_dir / "progress.json", {
            "state": "trained", "step": state.step, "total": stage.steps,
            "loss": state.history[-1]["loss"] if state.history else None, "skipped": len(state.skipped),
            "elapsed": state.elapsed, "it_s": stage.steps / max(state.elapsed, 1e-9), "ranks": ranks.world_size})
    finish(ranks)
    return str(final)


def _divergence(method: str, stage, state: TrainState, term: str) -> dict:
    where = {"tangent": "the tangent df/dt", "loss": "the loss", "gradient": "a gradient"}.get(term, term)
    why = ("on_nonfinite: stop" if stage.on_nonfinite == "stop" else
           f"more than max_skipped_steps={stage.max_skipped_steps} steps skipped")
    return {"step": state.step, "term": term, "policy": stage.on_nonfinite, "skipped": len(state.skipped),
            "message": f"{method}: {where} went non-finite at step {state.step} ({why})"}


def diverged_record(run_dir: Path) -> dict | None:
    """What diverged.json says (step, term, policy, skipped, message), or None for a job that did not diverge."""
    return store.read_json(Path(run_dir) / "diverged.json")


def _mark_diverged(run_dir: Path, record: dict) -> None:
    store.write_json(run_dir / "diverged.json", record)
    store.write_json(run_dir / "progress.json", {**store.read_json(run_dir / "progress.json", {}),
                                                 "state": "diverged", "step": record["step"],
                                                 "diverged": record["message"]})
    print(f"warning: {run_dir.name} diverged: {record['message']}", file=sys.stderr, flush=True)


def _report(run_dir: Path, state: TrainState, window: list[dict], seconds: float, total: int) -> None:
    """Append the window's mean diagnostics to the history and refresh progress.json."""
    mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    state.history.append({"step": state.step, **mean, **({"skipped": len(state.skipped)} if state.skipped else {})})
    store.write_json(run_dir / "progress.json", {
        "state": "running", "step": state.step, "total": total, "loss": mean["loss"],
        "it_s": len(window) / max(seconds, 1e-9), "elapsed": state.elapsed})
